"""``latentar push``: upload a saved model, with its model card, to the Hugging Face Hub."""

from __future__ import annotations

from latentar.push import COMMIT_MESSAGE, push_to_hub


def add_push_command(subparsers) -> None:
    parser = subparsers.add_parser("push", help="upload a saved model and its card to the Hugging Face Hub")
    parser.add_argument("--model", required=True,
                        help="a saved model folder, a run's stage folder (e.g. runs/main/prior), or hf://USER/REPO")
    parser.add_argument("--repo", required=True, help="the Hub model repo to upload into, USER/REPO (made if missing)")
    parser.add_argument("--vqvae-repo", default=None,
                        help="a code prior: the Hub repo (USER/REPO) of the VQ-VAE that decodes it, named in its card")
    parser.add_argument("--private", action="store_true", help="make the repo private (when this push makes it)")
    parser.add_argument("--message", default=COMMIT_MESSAGE, help="the commit message")
    parser.set_defaults(func=run_push)


def run_push(args) -> None:
    url = push_to_hub(args.model, args.repo, vqvae_repo=args.vqvae_repo, private=args.private,
                      commit_message=args.message)
    print(f"pushed {args.model} to hf://{args.repo}: {url}")
