"""Dev-only code: the bench harness, the demo and the sample-photo makers.

Excluded from the wheel (pyproject.toml's `packages.find` excludes
`imgfeat.dev*`) and from logged models (`imgfeat.model.SERVED_CODE`), and never
imported by library code: only tests, bench/, notebooks' dev cells, `make demo`
and `imgfeat bench` (which says so when run from a wheel) reach it. Available
from a clone (`make setup`: an editable install).
"""
