// Kubernetes, Istio and Gateway API objects against the pinned @kubernetes-models packages
// (types, enums, ranges, required fields). A kind no package knows is a failure, not a skip:
// a typo in `kind` or an apiVersion the CRDs do not serve would otherwise pass unnoticed.
// usage: node validate-k8s.mjs FILE...
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const pkgs = ["kubernetes-models", "@kubernetes-models/istio", "@kubernetes-models/gateway-api"];

async function modelFor(apiVersion, kind) {
  for (const p of pkgs) {
    try {
      const m = await import(`${p}/${apiVersion}`);
      if (m[kind]) return m[kind];
    } catch {
      // not in this package
    }
  }
  return null;
}

let bad = 0;
let n = 0;
for (const f of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(f, "utf8"))) {
    if (doc.errors.length) {
      bad++;
      console.log(`INVALID ${f}: YAML ${doc.errors.map((e) => e.message).join("; ")}`);
      continue;
    }
    const obj = doc.toJS();
    if (!obj) continue;
    n++;
    const id = `${obj.kind}/${obj.metadata?.namespace ?? "default"}/${obj.metadata?.name} (${obj.apiVersion})`;
    const Model = await modelFor(obj.apiVersion, obj.kind);
    if (!Model) {
      bad++;
      console.log(`UNKNOWN ${id}`);
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(`ok      ${id}`);
    } catch (e) {
      bad++;
      const errs = (e.errors ?? [e]).map((x) => `${x.instancePath ?? ""} ${x.message}`);
      console.log(`INVALID ${id}\n  ${errs.join("\n  ")}`);
    }
  }
}
console.log(`${n - bad} passed, ${bad} failed`);
process.exit(bad ? 1 : 0);
