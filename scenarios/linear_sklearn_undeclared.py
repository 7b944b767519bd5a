"""The seed's LinearFlow importing sklearn in `start` without declaring it: under
--environment=conda it must fail with ModuleNotFoundError, even if the user's Python has sklearn."""

from metaflow import FlowSpec, step


class UndeclaredSklearnFlow(FlowSpec):
    @step
    def start(self):
        import sklearn  # noqa: F401

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
    UndeclaredSklearnFlow()
