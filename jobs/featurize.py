"""spark-submit entry point for featurization: same flags as `imgfeat featurize`.

    spark-submit --py-files dist/imgfeat-*.whl jobs/featurize.py \
        --config conf/featurize.yaml --input s3://bucket/photos --table /lake/embeddings
"""

import sys

from imgfeat.cli import main

if __name__ == "__main__":
    sys.exit(main(["featurize", *sys.argv[1:]]))
