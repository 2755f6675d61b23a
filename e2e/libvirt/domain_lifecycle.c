/* Defines the domain in argv[1] on the session libvirtd of this user
 * (qemu:///session), starts it, destroys it and undefines it: the lifecycle
 * whose hook calls libvirtd_test.sh checks. Prints what it did; exits 1 on
 * the first libvirt error, with libvirt's message. */
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <stdio.h>

int main(int argc, char **argv) {
  static char xml[1 << 16];
  FILE *f = argc > 1 ? fopen(argv[1], "r") : NULL;
  if (f == NULL) {
    fprintf(stderr, "usage: domain_lifecycle DOMAIN.xml\n");
    return 2;
  }
  size_t n = fread(xml, 1, sizeof(xml) - 1, f);
  fclose(f);
  xml[n] = 0;
  virConnectPtr conn = virConnectOpen("qemu:///session");
  if (conn == NULL) {
    fprintf(stderr, "connect: %s\n", virGetLastErrorMessage());
    return 1;
  }
  int rc = 1;
  virDomainPtr dom = virDomainDefineXML(conn, xml);
  if (dom == NULL) {
    fprintf(stderr, "define: %s\n", virGetLastErrorMessage());
  } else if (virDomainCreate(dom) < 0) {
    fprintf(stderr, "start: %s\n", virGetLastErrorMessage());
  } else {
    printf("started %s\n", virDomainGetName(dom));
    if (virDomainDestroy(dom) < 0) {
      fprintf(stderr, "destroy: %s\n", virGetLastErrorMessage());
    } else {
      printf("destroyed\n");
      rc = 0;
    }
  }
  if (dom != NULL) {
    virDomainUndefine(dom);
    virDomainFree(dom);
  }
  virConnectClose(conn);
  return rc;
}
