"""The seed's @conda_base / @conda / @conda(disabled=True) example, with versions that exist for 3.11.

a: base environment (numpy 1.26.4, Python 3.11); b: numpy overridden to 2.1.3; c: the user's own
environment, outside isolation.
"""

from metaflow import FlowSpec, conda, conda_base, step


@conda_base(libraries={"numpy": "1.26.4"}, python="3.11")
class BaseOverrideFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.a)

    @step
    def a(self):
        import numpy

        self.numpy_a = numpy.__version__
        self.next(self.b)

    @conda(libraries={"numpy": "2.1.3"})
    @step
    def b(self):
        import numpy

        self.numpy_b = numpy.__version__
        self.next(self.c)

    @conda(disabled=True)
    @step
    def c(self):
        import sys

        self.c_python = sys.executable  # the user's own interpreter, outside isolation
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BaseOverrideFlow()
