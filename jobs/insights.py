"""spark-submit entry point for the insights report: same flags as `imgfeat insights`.

    spark-submit --py-files dist/imgfeat-*.whl jobs/insights.py \
        --config conf/insights.yaml --model models:/photos/3 --output /dbfs/reports/photos-3
"""

import sys

from imgfeat.cli import main

if __name__ == "__main__":
    sys.exit(main(["insights", *sys.argv[1:]]))
