"""spark-submit entry point for training: same flags as `imgfeat train`.

    spark-submit --py-files dist/imgfeat-*.whl jobs/train.py \
        --config conf/train.yaml --table /lake/embeddings --set model_name=photos
"""

import sys

from imgfeat.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
