"""``edge-inspect keys``: create a CURVE key pair (public NAME.key to share, secret NAME.key_secret to keep)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("keys", help="generate a CURVE key pair for the publisher/control or a client",
                              description="Writes NAME.key (public) and NAME.key_secret (secret, mode 0600).")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the key files to")
    p.add_argument("--name", required=True, help="key name, e.g. server or gateway1")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..protocol.security import generate_keypair

    public, secret = generate_keypair(args.out, args.name, overwrite=args.force)
    print(f"public key: {public}   (share: a client's goes into the station's allowed_clients_dir; "
          "the server's goes to every client as --curve-server-key)")
    print(f"secret key: {secret}   (keep private: the station's security.server_secret_key, or a client's "
          "--curve-client-key)")
    return 0
