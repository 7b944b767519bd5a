"""@catch and a switch, written as Metaflow's docs write them (issue 26 items 1 and 7).

``compute`` raises; ``@catch(var="compute_failed")`` keeps the exception and the run goes on, so the
step's outcome is "caught", not "failed". ``route`` is a switch (Metaflow 2.19: a dict of branches and
the artifact to switch on): it takes ``a`` after a caught exception, ``b`` otherwise, and the branch it
does not take is "not run", never "passed".

COMPUTE_RAISES (tests only) makes a variant: "KeyError" raises another type, "none" raises nothing.
"""

import os

from metaflow import FlowSpec, catch, step


class CatchSwitchFlow(FlowSpec):
    @step
    def start(self):
        self.values = [3, 1, 2]
        self.next(self.compute)

    @catch(var="compute_failed")
    @step
    def compute(self):
        self.total = sum(self.values)
        raises = os.environ.get("COMPUTE_RAISES", "ValueError")
        if raises == "ValueError":
            raise ValueError("the values are not sorted")
        if raises == "KeyError":
            raise KeyError("values")
        self.mean = self.total / len(self.values)
        self.next(self.route)

    @step
    def route(self):
        self.which = "a" if self.compute_failed else "b"
        self.next({"a": self.a, "b": self.b}, condition="which")

    @step
    def a(self):
        self.result = "recovered: %s" % self.compute_failed.type
        self.next(self.end)

    @step
    def b(self):
        self.result = "mean %.1f" % self.mean
        self.next(self.end)

    @step
    def end(self):
        print("result:", self.result)


if __name__ == "__main__":
    CatchSwitchFlow()
