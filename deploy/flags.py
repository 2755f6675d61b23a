"""The agent's flags as the deploy tests see them.

What the built migd says it accepts (`migd --helpfull`), and what an Abseil
flag file or a command line sets. Shared by config_test.py and
kubernetes_test.py.
"""

import re
import subprocess

# Flags for tests and demos only: never in a production flag file.
TEST_ONLY = {
    "test_fault",
    "port_file",
    "metrics_port_file",
    "emulated_devices",
    "emulated_state_size",
    "emulated_seed",
    # A fake sysfs tree for the host service's tests.
    "sysfs_root",
}

# Abseil's own flags (flag files, environment, help).
ABSEIL = {"flagfile", "fromenv", "tryfromenv", "undefok"}


def agent_flags(migd):
    """{name: default} of every flag `migd --helpfull` lists, Abseil's too.

    The default is the text after "default:", quotes removed.
    """
    run = subprocess.run([migd, "--helpfull"], capture_output=True, text=True,
                         timeout=60)
    text = run.stdout + run.stderr
    # "    --name (help, possibly over several lines); default: value;"
    flags = {}
    for m in re.finditer(r"^    --([a-z0-9_]+) \((.*?)\);\s+default: (.*?);$",
                         text, re.M | re.S):
        flags[m.group(1)] = m.group(3).strip('"')
    if "listen" not in flags or "flagfile" not in flags:
        raise AssertionError(f"{migd} --helpfull lists no --listen:\n{text}")
    return flags


def parse_flag(arg, bools):
    """(name, value) of one "--name=value", "--name" or "--noname".

    `bools` names the bool flags, for which "--name" means true and
    "--noname" false.
    """
    if not arg.startswith("--"):
        raise ValueError(f"not a flag: {arg!r}")
    body = arg[2:]
    if "=" in body:
        name, value = body.split("=", 1)
        return name, value
    if body.startswith("no") and body[2:] in bools:
        return body[2:], "false"
    return body, "true"


def flag_file(text):
    """The "--flag=value" lines of an Abseil flag file, in order.

    Blank lines and lines whose first non-blank character is '#' are
    skipped, as Abseil does; any other line must start with "--".
    """
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not stripped.startswith("--"):
            raise ValueError(f"line {number} is neither a flag nor a comment: "
                             f"{line!r}")
        lines.append(stripped)
    return lines


def bool_flags(flags):
    """The names of the bool flags among `flags` (their default is a bool)."""
    return {name for name, default in flags.items()
            if default in ("true", "false")}
