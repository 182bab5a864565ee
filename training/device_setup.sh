# Source this on a bare GPU machine that has PyTorch but no network, from the repo root.
# It installs the carried wheels (.devA/whl, see training/README.md) and points
# ysoscale at carried, prebuilt grids (the sources of the grids are not needed there).
# Each part is optional, so the carried files can come in several calls.
if [ -d .devA/whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .devA/whl/*.whl || return 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 YSOSCALE_CACHE_DIR=/root/cache
mkdir -p /root/cache
if [ -d .devA/cache ]; then cp -r .devA/cache/. /root/cache/; fi
# the grids packed by training/pack_grids.py (quantised to fit the transfer limit)
if [ -d .devA/grids ]; then python3 training/pack_grids.py unpack --src .devA/grids || return 1; fi
if [ -d .devB/dmag_dav ]; then
    cp -r .devB/dmag_dav /root/cache/photometry_phoenix-kurucz_G23.zarr/
fi
if [ -d .devB/cache ]; then cp -r .devB/cache/. /root/cache/; fi
true
