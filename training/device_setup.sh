# Source this on a bare GPU machine that has PyTorch but no network, from the repo root.
# It installs the carried wheels (.devA/whl) and unpacks the carried grids (.devA/grids,
# made here by `python training/pack_grids.py pack`) into $YSOSCALE_CACHE_DIR, so ysoscale
# runs there without the grids' sources (see training/README.md).
if [ -d .devA/whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .devA/whl/*.whl || return 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 YSOSCALE_CACHE_DIR=/root/cache
mkdir -p /root/cache /root/run
if [ -d .devA/grids ]; then python3 training/pack_grids.py unpack --src .devA/grids || return 1; fi
true
