#!/usr/bin/env python3
"""Drives a ProductService server the way a third-party Python user would:
grpcio, server reflection (grpc.reflection.v1alpha, the only protocol
grpcio-reflection speaks) and NO generated product code.

Usage: reflect_client.py HOST:PORT [--request-id ID] [--timeout SECONDS]
                          [--cacert CA.crt --authority NAME] [--skip STEP ...]

With --cacert the channel is TLS, trusting that CA; --authority sets both the
TLS server name (SNI and certificate check) and the :authority header, as
`grpcurl -cacert ... -authority ...` does through a gateway.

Prints exactly one JSON document to stdout describing what it saw:

  reflection      services listed, ProductService methods and their kinds
  get_product     GetProduct "123" sent with `user-type: premium` and
                  `x-request-id: ID`: the response and its initial metadata
  list_products   ListProducts {page_size: 10, page_number: 1}
  health          grpc.health.v1 Check for "" and "product.ProductService"
  watch_prices    the first 3 WatchPrices messages, then a client cancel
  agent_sync      3 pings on the AgentSync bidi stream and their pongs
  errors          status code and details of bad calls (empty id, unknown id,
                  out-of-range interval)
  problems        every unexpected result; empty when all went as expected

Exits 0 when `problems` is empty, 1 otherwise, 2 when grpcio is missing.
The caller asserts the detailed values; this script only insists on the
outcomes any client relies on (status codes, message counts).
"""

import argparse
import json
import sys
import traceback

try:
    import grpc
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
except ImportError as e:  # pragma: no cover - environment problem
    print(
        f"reflect_client.py: {e}. Install the test clients with `make tools` "
        "(grpcio, grpcio-reflection, grpcio-health-checking in .venv).",
        file=sys.stderr,
    )
    sys.exit(2)

SERVICE = "product.ProductService"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"


def to_dict(msg):
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def metadata_dict(md):
    out = {}
    for key, value in md or ():
        out.setdefault(key, []).append(value if isinstance(value, str) else value.decode("latin-1"))
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def rpc_error(e):
    return {"code": e.code().name, "details": e.details()}


class Client:
    def __init__(self, channel, timeout):
        self.channel = channel
        self.timeout = timeout
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)
        self.service = None

    def method(self, name):
        if self.service is None:
            self.service = self.pool.FindServiceByName(SERVICE)
        m = self.service.FindMethodByName(name)
        req = message_factory.GetMessageClass(m.input_type)
        resp = message_factory.GetMessageClass(m.output_type)
        path = f"/{SERVICE}/{name}"
        kind = {
            (False, False): self.channel.unary_unary,
            (False, True): self.channel.unary_stream,
            (True, False): self.channel.stream_unary,
            (True, True): self.channel.stream_stream,
        }[(m.client_streaming, m.server_streaming)]
        call = kind(path, request_serializer=req.SerializeToString, response_deserializer=resp.FromString)
        return req, call


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="HOST:PORT of a gRPC server (plaintext h2c unless --cacert)")
    ap.add_argument("--cacert", help="PEM CA to trust; makes the channel TLS")
    ap.add_argument("--authority", help="TLS server name and :authority (default: from the target)")
    ap.add_argument("--agent-version", default="v2", help="agent-version metadata of the AgentSync stream")
    ap.add_argument("--skip", action="append", default=[], help="a step not to run (repeatable)")
    ap.add_argument("--request-id", default="reflect-client-0001")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-RPC deadline in seconds")
    a = ap.parse_args()

    out = {"target": a.target, "grpcio": grpc.__version__, "tls": bool(a.cacert), "problems": []}

    def problem(what):
        out["problems"].append(what)

    def step(name, fn):
        if name in a.skip:
            return
        try:
            fn()
        except grpc.RpcError as e:
            out.setdefault(name, {})["rpc_error"] = rpc_error(e)
            problem(f"{name}: unexpected RPC error {e.code().name}: {e.details()}")
        except Exception as e:  # any other failure is a problem too, not a crash
            out.setdefault(name, {})["exception"] = repr(e)
            problem(f"{name}: {e!r}\n{traceback.format_exc()}")

    options = []
    if a.authority:
        options += [("grpc.default_authority", a.authority)]
    if a.cacert:
        with open(a.cacert, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        if a.authority:
            options += [("grpc.ssl_target_name_override", a.authority)]
        channel = grpc.secure_channel(a.target, creds, options=options)
    else:
        channel = grpc.insecure_channel(a.target, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=a.timeout)
    except grpc.FutureTimeoutError:
        out["problems"].append(f"could not connect to {a.target} within {a.timeout} s")
        print(json.dumps(out, indent=2))
        return 1
    c = Client(channel, a.timeout)

    # 1. Reflection (v1alpha): what services and methods does the server offer?
    def reflection():
        services = sorted(c.db.get_services())
        svc = c.pool.FindServiceByName(SERVICE)
        methods = {
            m.name: {"client_streaming": m.client_streaming, "server_streaming": m.server_streaming}
            for m in svc.methods
        }
        out["reflection"] = {"protocol": REFLECTION_V1ALPHA, "services": services, "product_methods": methods}
        for want in (SERVICE, "grpc.health.v1.Health"):
            if want not in services:
                problem(f"reflection: {want} not listed (got {services})")

    step("reflection", reflection)

    # 2. GetProduct "123" with routing and correlation metadata.
    def get_product():
        Req, call = c.method("GetProduct")
        md = [("user-type", "premium"), ("x-request-id", a.request_id)]
        resp, rpc = call.with_call(json_format.ParseDict({"product_id": "123"}, Req()), metadata=md, timeout=a.timeout)
        out["get_product"] = {
            "request_metadata": dict(md),
            "response": to_dict(resp),
            "initial_metadata": metadata_dict(rpc.initial_metadata()),
            "trailing_metadata": metadata_dict(rpc.trailing_metadata()),
            "code": rpc.code().name,
        }
        if resp.id != "123":
            problem(f"get_product: asked for 123, got id {resp.id!r}")

    step("get_product", get_product)

    # 3. ListProducts, first page.
    def list_products():
        Req, call = c.method("ListProducts")
        resp, rpc = call.with_call(
            json_format.ParseDict({"page_size": 10, "page_number": 1}, Req()), timeout=a.timeout
        )
        out["list_products"] = {"response": to_dict(resp), "initial_metadata": metadata_dict(rpc.initial_metadata())}
        if len(resp.products) != 10:
            problem(f"list_products: page_size 10 gave {len(resp.products)} products")

    step("list_products", list_products)

    # 4. Health, overall and for the product service.
    def health():
        stub = health_pb2_grpc.HealthStub(channel)
        out["health"] = {}
        for name in ("", SERVICE):
            r = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=a.timeout)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            out["health"][name] = status
            if status != "SERVING":
                problem(f"health: {name!r} is {status}")

    step("health", health)

    # 5. WatchPrices: read three updates, then cancel as a client would.
    def watch_prices():
        Req, call = c.method("WatchPrices")
        req = json_format.ParseDict({"product_ids": ["1"], "interval_ms": 50}, Req())
        stream = call(req, timeout=a.timeout)
        got = []
        for msg in stream:
            got.append(to_dict(msg))
            if len(got) == 3:
                break
        initial = metadata_dict(stream.initial_metadata())
        stream.cancel()
        try:
            extra = next(stream)
            final = {"code": "OK", "details": "", "extra_message": to_dict(extra)}
        except grpc.RpcError as e:
            final = rpc_error(e)
        except StopIteration:
            final = {"code": stream.code().name, "details": stream.details()}
        out["watch_prices"] = {"messages": got, "initial_metadata": initial, "after_cancel": final}
        if len(got) != 3:
            problem(f"watch_prices: stream ended after {len(got)} messages")
        if final["code"] != "CANCELLED":
            problem(f"watch_prices: after cancel the call ended with {final['code']}, expected CANCELLED")

    step("watch_prices", watch_prices)

    # 6. AgentSync: a bidi stream, three pings, three pongs.
    def agent_sync():
        Req, call = c.method("AgentSync")
        pings = [json_format.ParseDict({"seq": str(i), "message": f"ping {i}"}, Req()) for i in (1, 2, 3)]
        md = [("agent-id", "reflect-client"), ("agent-version", a.agent_version)]
        pongs = [to_dict(p) for p in call(iter(pings), metadata=md, timeout=a.timeout)]
        out["agent_sync"] = {"pongs": pongs}
        if len(pongs) != 3:
            problem(f"agent_sync: 3 pings gave {len(pongs)} pongs")

    step("agent_sync", agent_sync)

    # 7. Bad input: the status a user sees.
    def errors():
        out["errors"] = {}
        cases = [
            ("empty_product_id", "GetProduct", {"product_id": ""}, "INVALID_ARGUMENT", "product_id"),
            ("unknown_product_id", "GetProduct", {"product_id": "nope"}, "NOT_FOUND", "nope"),
            ("watch_bad_interval", "WatchPrices", {"product_ids": ["1"], "interval_ms": 5}, "INVALID_ARGUMENT", "interval_ms"),
            ("watch_unknown_id", "WatchPrices", {"product_ids": ["1", "nope"]}, "NOT_FOUND", "product_ids[1]"),
        ]
        for key, method, body, want_code, want_text in cases:
            Req, call = c.method(method)
            req = json_format.ParseDict(body, Req())
            try:
                if method == "WatchPrices":
                    first = next(iter(call(req, timeout=a.timeout)))
                    res = {"code": "OK", "details": "", "first_message": to_dict(first)}
                else:
                    res = {"code": "OK", "details": "", "response": to_dict(call(req, timeout=a.timeout))}
            except grpc.RpcError as e:
                res = rpc_error(e)
            out["errors"][key] = res
            if res["code"] != want_code or want_text not in (res["details"] or ""):
                problem(f"errors.{key}: {method} {body} gave {res['code']} {res['details']!r}, "
                        f"expected {want_code} mentioning {want_text!r}")

    step("errors", errors)

    channel.close()
    print(json.dumps(out, indent=2, sort_keys=True))
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
