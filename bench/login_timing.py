"""A wrong password costs the same for a known and an unknown user name (no user oracle).

    python -m bench.login_timing [--rounds 9]

``Credentials.verify`` checks an unknown user against a decoy hash with the first
user's parameters: one scrypt either way (tests/unit/test_management_model.py
asserts that structurally). This measures it: the thread's CPU time of each, the
best of ``--rounds``, the two interleaved so both meet the same machine. A goal,
not a test (timing on a shared machine is noisy: it once read 15 % apart in CI).
"""

from __future__ import annotations

import argparse
import time

from lbmgmt.management.auth import Credentials, Role, User, hash_password


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    creds = Credentials([User("ops", Role.READONLY, password_hash=hash_password("right"))])
    best = {"ops": float("inf"), "nobody": float("inf")}
    for _ in range(args.rounds):
        for user in best:
            start = time.thread_time()
            creds.verify(user, "wrong")
            best[user] = min(best[user], time.thread_time() - start)
    known, unknown = best["ops"], best["nobody"]
    print(f"known user {known * 1000:.1f} ms, unknown {unknown * 1000:.1f} ms, "
          f"difference {abs(unknown - known) / known:.1%} (best of {args.rounds})")


if __name__ == "__main__":
    main()
