"""spark-submit entry point for batch scoring: same flags as `imgfeat score`.

    spark-submit --py-files dist/imgfeat-*.whl jobs/score.py \
        --config conf/score.yaml --model models:/photos/latest --input s3://bucket/new --output /lake/scores
"""

import sys

from imgfeat.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
