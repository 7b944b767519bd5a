"""An unseeded random number: every run differs, so a replay must end in "different"."""

import random

from metaflow import FlowSpec, step


class UnseededRandomFlow(FlowSpec):
    @step
    def start(self):
        self.value = random.random()
        self.label = "constant"
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    UnseededRandomFlow()
