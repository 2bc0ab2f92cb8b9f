#!/bin/bash
# Stage-1 training on several nodes with SLURM: one `accelerate launch` per node, each starting
# one process per GPU.   sbatch hub_configs/accelerate/slurm_train_vqgan.sh
#SBATCH --job-name=te-vqgan
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

GPUS_PER_NODE=8
MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=29500

srun --kill-on-bad-exit=1 bash -c "accelerate launch \
    --config_file hub_configs/accelerate/multinode.yaml \
    --num_machines $SLURM_NNODES \
    --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank \$SLURM_NODEID \
    --main_process_ip $MAIN_NODE \
    --main_process_port $MAIN_PORT \
    training/train_vqgan.py \
    --model_config hub_configs/te-vqgan-mnist.json \
    --dataset textmnist --output_dir outputs/te-vqgan-mnist \
    --train_batch_size 96 --mixed_precision bf16 \
    --checkpointing_steps 2000 --checkpoints_total_limit 3 --resume_from_checkpoint latest"
