"""Artifacts pickled with one set of versions, visible to steps pinned to others.

`start` (pandas 2.2.3, numpy 2.1.3, scikit-learn 1.5.2) makes a DataFrame and a fitted model.
`older_sklearn` (scikit-learn 1.5.1) can load the model, with scikit-learn's version warning;
`older_pandas` (pandas 1.5.3, numpy 1.25.2) cannot load either: numpy 2 pickles name
`numpy._core`, which numpy before 1.26 does not have, and it has no scikit-learn at all. Neither step touches them, so the run succeeds;
repro's pickle matrix shows what would happen if they did.
"""

from metaflow import FlowSpec, conda, step


class PickleCompatFlow(FlowSpec):
    @conda(libraries={"pandas": "2.2.3", "numpy": "2.1.3", "scikit-learn": "1.5.2"})
    @step
    def start(self):
        import numpy as np
        import pandas as pd
        from sklearn.linear_model import LogisticRegression

        x = np.array([[0.0], [1.0], [2.0], [3.0]])
        y = np.array([0, 0, 1, 1])
        self.frame = pd.DataFrame({"x": x[:, 0], "y": y})
        self.model = LogisticRegression().fit(x, y)
        self.next(self.older_sklearn, self.older_pandas)

    @conda(libraries={"pandas": "2.2.3", "numpy": "2.1.3", "scikit-learn": "1.5.1"})
    @step
    def older_sklearn(self):
        self.next(self.join)

    @conda(libraries={"pandas": "1.5.3", "numpy": "1.25.2"})
    @step
    def older_pandas(self):
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    PickleCompatFlow()
