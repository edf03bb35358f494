"""spark-submit / Databricks entry point for the nightly job: same flags as `imgfeat nightly`.

    spark-submit --py-files dist/imgfeat.zip jobs/nightly.py --config conf/nightly.yaml
    spark-submit --py-files dist/imgfeat.zip jobs/nightly.py --config conf/nightly.yaml --step train

Exit codes as the CLI: 0 done (including "nothing new"), 2 user error, 3 the
table's lock is held by another run (retry later), 1 a bug.
"""

import sys

from imgfeat.cli import main

if __name__ == "__main__":
    sys.exit(main(["nightly", *sys.argv[1:]]))
