"""Push a trained checkpoint (model + tokenizer + generated model card) to the Hugging Face Hub.

    python scripts/push_to_hub.py --model outputs/llada-xdlm --repo you/LLaDA-8B-XDLM --k1 0.1 --train_steps 600
    python scripts/push_to_hub.py ... --dry_run   # stage the folder only (inspect it before uploading)
"""

import argparse
import tempfile

from llada_xdlm.hub import CardInfo, stage_for_hub, upload


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local checkpoint folder (save_pretrained output)")
    parser.add_argument("--repo", required=True, help="Hub repo id, e.g. user/LLaDA-8B-XDLM")
    parser.add_argument("--base_model", default=CardInfo.base_model)
    parser.add_argument("--objective", default="xdlm", choices=["xdlm", "mdlm", "udlm", "ar"])
    parser.add_argument("--k1", type=float, default=None, help="mixing ratio to record (default: config.k1)")
    parser.add_argument("--dataset", default=CardInfo.dataset)
    parser.add_argument("--train_steps", type=int, default=None)
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="stage into --out (or a temp dir) and stop")
    parser.add_argument("--out", default=None, help="staging folder (default: a temporary directory)")
    args = parser.parse_args()

    import llada_xdlm  # noqa: F401  (registers the LLaDA classes with the Auto classes)

    info = CardInfo(args.repo, args.base_model, args.objective, args.k1, args.dataset, args.train_steps)
    out = args.out or tempfile.mkdtemp(prefix="llada-xdlm-hub-")
    folder = stage_for_hub(args.model, out, info)
    print(f"staged {sorted(p.name for p in folder.iterdir())} in {folder}")
    if not args.dry_run:
        print(f"uploaded: {upload(folder, args.repo, private=args.private)}")


if __name__ == "__main__":
    main()
