#!/usr/bin/env python3
"""Drive an lbmgmt management port with nothing but the standard library.

    python3 examples/jsonrpc_client.py 127.0.0.1:8084                 # dump every MBean
    python3 examples/jsonrpc_client.py 127.0.0.1:8084 --follow        # then print events
    python3 examples/jsonrpc_client.py 127.0.0.1:8084 --user ops --password-file pw

It knows only JSON-RPC 2.0: the MBean names, attributes and operations all
come from the daemon (queryNames, getMBeanInfo), as a monitoring script would.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request


class Port:
    def __init__(self, address, user=None, password=None, token=None):
        scheme = "" if address.startswith("http") else "http://"
        self.url = f"{scheme}{address}/jsonrpc"
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user:
            pair = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {pair}"
        self.next_id = 0

    def call(self, method, *params, timeout=10):
        self.next_id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                           "params": list(params)}).encode()
        request = urllib.request.Request(self.url, body, self.headers)
        with urllib.request.urlopen(request, timeout=timeout + 5) as response:
            answer = json.load(response)
        if "error" in answer:
            error = answer["error"]
            raise RuntimeError(f"{method}: {error['message']} ({error['code']})")
        return answer["result"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT of a management port")
    parser.add_argument("--user")
    parser.add_argument("--password-file")
    parser.add_argument("--token-file")
    parser.add_argument("--follow", action="store_true", help="print notifications as they come")
    parser.add_argument("--polls", type=int, default=0,
                        help="stop after this many polls (0: never)")
    args = parser.parse_args()
    def read(path):
        if not path:
            return None
        with open(path) as f:
            return f.read().strip()

    port = Port(args.address, args.user, read(args.password_file), read(args.token_file))
    try:
        version = port.call("version")
        print(f"# {version['product']} {version['version']} {version['daemon']}, "
              f"you are {version['role']}")
        for name in port.call("queryNames", "*:*"):
            info = port.call("getMBeanInfo", name)
            values = port.call("getAttributes", name, None)
            print(f"\n{name}  ({info['description']})")
            for attr in info["attributes"]:
                mark = "rw" if attr["canWrite"] else "r "
                print(f"  {mark} {attr['name']:<22} {json.dumps(values[attr['name']])}")
            for op in info["operations"]:
                params = ", ".join(f"{p['name']}: {p['type']}" for p in op["parameters"])
                allowed = "" if op["canInvoke"] else "  (not for your role)"
                print(f"  op {op['name']}({params}) -> {op['returnType']} "
                      f"[{op['impact']}]{allowed}")
        if args.follow:
            since, epoch, polls = None, None, 0
            while not args.polls or polls < args.polls:
                batch = port.call("pollNotifications", since, 25, None, epoch, timeout=25)
                polls += 1
                if batch.get("reset"):
                    print("(the daemon restarted: its notifications since)")
                if batch["lost"]:
                    print(f"({batch['lost']} notifications lost)")
                for n in batch["notifications"]:
                    print(f"{n['sequence']:>6} {n['type']:<28} {n['message']}", flush=True)
                since, epoch = batch["next"], batch.get("epoch")
    except (urllib.error.URLError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
