"""Checks of a run against another or against today: ``compare`` (artifacts, verdicts), ``drift``
(re-resolved locks), ``pickles`` (pickle compatibility across environments) and ``lineage`` (the runs of
other flows a run read). Each turns records into typed results and ``Finding``s; none starts a run."""
