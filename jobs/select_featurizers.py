"""spark-submit entry point for featurizer selection: same flags as `imgfeat select`.

    spark-submit --py-files dist/imgfeat-*.whl jobs/select_featurizers.py \
        --config conf/select.yaml --input /lake/photos --table /lake/embeddings
"""

import sys

from imgfeat.cli import main

if __name__ == "__main__":
    sys.exit(main(["select", *sys.argv[1:]]))
