"""Checks of a run against another or against today: ``compare`` (artifacts, verdicts, and a replay
elsewhere judged: ``ReplayCheck``), ``drift`` (re-resolved locks, input drift) and ``pickles`` (pickle
compatibility across environments). Each turns records into typed results and ``Finding``s; none starts
a run."""
