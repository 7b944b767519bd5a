"""A foreach whose tasks share one environment, then a branch into two steps with different
environments, joined by a step in a third. Artifacts are plain Python values."""

from metaflow import FlowSpec, conda, step


class ForeachJoinFlow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(5))
        self.next(self.work, foreach="items")

    @conda(libraries={"six": "1.16.0"})
    @step
    def work(self):
        import six

        self.square = self.input * self.input
        self.six_version = six.__version__
        self.next(self.gather)

    @step
    def gather(self, inputs):
        self.total = sum(i.square for i in inputs)
        self.six_versions = sorted(set(i.six_version for i in inputs))
        self.next(self.fork)

    @step
    def fork(self):
        self.next(self.left, self.right)

    @conda(libraries={"idna": "3.10"})
    @step
    def left(self):
        import idna

        self.side = "left"
        self.lib = "idna " + idna.__version__
        self.next(self.join)

    @conda(libraries={"six": "1.17.0"})
    @step
    def right(self):
        import six

        self.side = "right"
        self.lib = "six " + six.__version__
        self.next(self.join)

    @step
    def join(self, inputs):
        self.libs = sorted(i.lib for i in inputs)
        self.total = inputs.left.total
        self.next(self.end)

    @step
    def end(self):
        print("total %d, libs %s" % (self.total, self.libs))


if __name__ == "__main__":
    ForeachJoinFlow()
