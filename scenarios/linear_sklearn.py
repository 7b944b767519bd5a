"""The seed's LinearFlow with scikit-learn declared for `start` only (a version with wheels for 3.11)."""

from metaflow import FlowSpec, conda, step


class LinearSklearnFlow(FlowSpec):
    @conda(libraries={"scikit-learn": "1.5.2"})
    @step
    def start(self):
        import sklearn

        self.sklearn_version = sklearn.__version__
        self.my_var = "hello world"
        self.next(self.a)

    @step
    def a(self):
        print("the data artifact is: %s" % self.my_var)
        try:
            import sklearn  # noqa: F401 - declared for `start` only, so this must fail here

            self.sklearn_in_a = True
        except ImportError:
            self.sklearn_in_a = False
        self.next(self.end)

    @step
    def end(self):
        print("the data artifact is still: %s" % self.my_var)


if __name__ == "__main__":
    LinearSklearnFlow()
