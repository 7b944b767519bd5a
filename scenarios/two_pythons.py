"""Steps on different Python versions; an artifact written under 3.9 is read under 3.12."""

from metaflow import FlowSpec, conda, step


class TwoPythonsFlow(FlowSpec):
    @conda(python="3.9")
    @step
    def start(self):
        import sys

        self.start_python = "%d.%d" % sys.version_info[:2]
        self.payload = {"numbers": [1, 2, 3], "name": "from 3.9"}
        self.next(self.end)

    @conda(python="3.12")
    @step
    def end(self):
        import sys

        self.end_python = "%d.%d" % sys.version_info[:2]
        self.payload_seen = self.payload["name"]


if __name__ == "__main__":
    TwoPythonsFlow()
