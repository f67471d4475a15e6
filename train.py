"""Fine-tune the ScaleMAE ViTDet detector (see `python train.py --help`).

python train.py ...                                          one process
torchrun --nproc_per_node=N train.py ...                     N processes (and --nnodes/--rdzv_*
across machines)
python -m torch.distributed.launch --nproc_per_node=N train.py ...   the old launcher
"""

from scalemae_det.cli import report_user_errors
from scalemae_det.engine.options import train_flag
from scalemae_det.engine.run import main

if __name__ == "__main__":
    report_user_errors(main, spell=train_flag)
