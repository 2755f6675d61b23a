#!/usr/bin/env python3
"""deploy/grafana/migd.json: a Grafana dashboard an operator can import.

The JSON parses; the data source is a dashboard variable (so that import and
provisioning both work), the agent variable lists the agents, the downtime
limit is a variable; every panel queries Prometheus through that data source,
every migd series it reads is filtered by the agent variable, no query uses a
variable the dashboard does not define, titles are unique (the metrics test
finds panels by title) and the layout fits Grafana's 24 columns. Whether the
queries are valid PromQL over families the agents export, with data, is the
loopback metrics test's business (//e2e/loopback:metrics_test).

Usage: dashboard_test.py DASHBOARD_JSON
"""

import json
import os
import re
import sys
import unittest

DASHBOARD = ""

# Grafana's own variables a query may use.
BUILTIN = {"__rate_interval", "__interval", "__range"}

# What the dashboard shows, by panel title.
PANELS = {
    "Migrations by outcome", "Failures by reason", "Downtime quantiles",
    "Downtime parts", "Switchover", "Throughput per migration",
    "Bytes moved: pre-copy vs stop-copy", "Jobs in flight by phase",
    "Dirty rate", "Devices by state", "Job notices",
}


def panels_of(panels):
    for p in panels:
        yield p
        yield from panels_of(p.get("panels", []))


class DashboardTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        with open(DASHBOARD) as f:
            cls.d = json.load(f)
        cls.panels = list(panels_of(cls.d["panels"]))
        cls.variables = {v["name"]: v for v in cls.d["templating"]["list"]}
        cls.queries = [(p["title"], t) for p in cls.panels
                       for t in p.get("targets", [])]

    def test_identity(self):
        self.assertEqual(self.d["uid"], "migd")
        self.assertEqual(self.d["title"], "migd")
        self.assertGreaterEqual(self.d["schemaVersion"], 36)

    def test_variables(self):
        ds = self.variables["datasource"]
        self.assertEqual((ds["type"], ds["query"]), ("datasource", "prometheus"))
        agent = self.variables["instance"]
        self.assertEqual(agent["type"], "query")
        self.assertIn("label_values(migd_devices, instance)",
                      json.dumps(agent["query"]))
        self.assertTrue(agent["includeAll"] and agent["multi"])
        # No allValue: "All" then means the agents the variable found, not
        # every target Prometheus scrapes.
        self.assertFalse(agent.get("allValue"))
        limit = self.variables["downtime_limit"]
        self.assertEqual(float(limit["query"]), 0.3)

    def test_every_query_goes_through_the_datasource_variable(self):
        self.assertTrue(self.queries)
        for p in self.panels:
            if p["type"] == "row":
                continue
            self.assertEqual(p["datasource"],
                             {"type": "prometheus", "uid": "${datasource}"},
                             p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${datasource}")

    def test_every_migd_series_is_filtered_by_agent(self):
        for title, t in self.queries:
            for selector in re.findall(r"\bmigd_[a-z0-9_]+(\{[^}]*\})?",
                                       t["expr"]):
                self.assertIn('instance=~"$instance"', selector,
                              f"{title}: {t['expr']}")

    def test_queries_use_only_defined_variables(self):
        for title, t in self.queries:
            for name in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)",
                                   t["expr"]):
                self.assertIn(name, set(self.variables) | BUILTIN,
                              f"{title}: {t['expr']}")

    def test_downtime_is_drawn_against_the_limit(self):
        (downtime,) = [p for p in self.panels
                       if p["title"] == "Downtime quantiles"]
        exprs = [t["expr"] for t in downtime["targets"]]
        for q in ("0.5", "0.9", "0.99"):
            self.assertTrue(any(e.startswith(f"histogram_quantile({q}, ")
                                and "migd_downtime_seconds_bucket" in e
                                for e in exprs), q)
        self.assertIn("vector(${downtime_limit})", exprs)

    def test_titles_unique_and_complete(self):
        titles = [p["title"] for p in self.panels]
        self.assertEqual(len(titles), len(set(titles)), titles)
        self.assertEqual(PANELS - set(titles), set())
        ids = [p["id"] for p in self.panels]
        self.assertEqual(len(ids), len(set(ids)))
        for title, t in self.queries:
            self.assertTrue(t["expr"].strip(), title)

    def test_layout_fits_24_columns(self):
        for p in self.panels:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            self.assertGreater(g["h"], 0)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    DASHBOARD = os.path.abspath(sys.argv[1])
    unittest.main(argv=sys.argv[:1], verbosity=2)
