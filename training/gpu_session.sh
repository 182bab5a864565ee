#!/bin/bash
# One GPU lease, unattended: simulate the 5e6-star training store, the 1e5-star held-out
# store and the bright field store; warm-start the default model on them and train a
# simformer beside it on the same GPU; score both on the held-out stars. Results in
# /root/run (logs; TRAINED and DONE mark the stages); models in /root/model and /root/sf.
#
#   source training/device_setup.sh
#   setsid nohup bash training/gpu_session.sh $(( $(date +%s) + 900 )) >/root/run.log 2>&1 &
#
# The argument is when training must end (epoch seconds; default 15 min from now).
set -x
R=/root/run
mkdir -p $R
END=${1:-$(( $(date +%s) + 900 ))}
W=$(( $(nproc) - 2 ))
sim() { python3 -m ysoscale simulate --workers $W "$@"; }
sim --n 5000000 --require-detection --seed 11 --out /root/t5m.zarr >$R/sim_t5m.log 2>&1 || exit 1
sim --n 100000 --require-detection --seed 99 --out /root/heldout.zarr >$R/sim_heldout.log 2>&1 || exit 1
sim --config training/bright_store.toml --out /root/bright.zarr >$R/sim_bright.log 2>&1 || exit 1
minutes=$(python3 -c "import time; print(round(($END - time.time()) / 60 - 1.5, 2))")
python3 -m ysoscale train --model simformer --data /root/t5m.zarr --out /root/sf \
    --config training/gpu_simformer.toml --device cuda --loader-threads 4 \
    --time-budget-minutes "$minutes" >$R/train_simformer.log 2>&1 &
python3 -m ysoscale train --data /root/t5m.zarr /root/bright.zarr --out /root/model \
    --config training/gpu_default_warm.toml --device cuda --loader-threads 8 \
    --init-from ysoscale/data/default_model --time-budget-minutes "$minutes" \
    >$R/train_default.log 2>&1
wait
touch $R/TRAINED
python3 benchmarks/calibration.py --model /root/model --store /root/heldout.zarr --split all \
    --n 100000 --importance 10000 --device cuda >$R/calibration.log 2>&1
python3 benchmarks/sample.py --npe /root/model --simformer /root/sf --heldout /root/heldout.zarr \
    --heldout-stars 5000 --steps 2,4,8,16 >$R/sample.log 2>&1
touch $R/DONE
