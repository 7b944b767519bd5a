"""The seed's LinearFlow: no decorators. Under --environment=conda every step is still isolated."""

from metaflow import FlowSpec, step


class LinearFlow(FlowSpec):
    @step
    def start(self):
        self.my_var = "hello world"
        self.next(self.a)

    @step
    def a(self):
        print("the data artifact is: %s" % self.my_var)
        self.next(self.end)

    @step
    def end(self):
        print("the data artifact is still: %s" % self.my_var)


if __name__ == "__main__":
    LinearFlow()
