"""spark-submit entry point for fine-tuning: same flags as `imgfeat finetune`.

    spark-submit --py-files dist/imgfeat-*.whl jobs/finetune.py \
        --config conf/finetune.yaml --input /lake/photos --set labels.source=/lake/labels.csv
"""

import sys

from imgfeat.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
