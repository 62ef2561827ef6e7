// Validates the custom resources of deploy/k8s renders against their
// published models (npm): KEDA's ScaledObject and TriggerAuthentication with
// @kubernetes-models/keda 0.4, the Prometheus Operator's PodMonitor with
// @kubernetes-models/prometheus-operator 4, and, as a second opinion on the
// core objects a ScaledObject depends on, the Deployments with
// kubernetes-models 4. The models check types, enums and required fields;
// they accept unknown keys, so invariants.py checks the keys KEDA reads.
//
// Usage: node crds.mjs FILE.json...   (each file: a JSON array of objects,
// written by invariants.py --split). Exits 1 naming every object that fails,
// and 2 on an object of a kind it has no model for.
import { readFileSync } from "node:fs";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "apps/v1/Deployment": Deployment,
};

let failed = 0;
let unknown = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const obj of JSON.parse(readFileSync(file, "utf8"))) {
    const key = `${obj.apiVersion}/${obj.kind}`;
    const name = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    const Model = models[key];
    if (!Model) {
      console.error(`${name}: no model for ${key} in crds.mjs`);
      unknown++;
      continue;
    }
    try {
      new Model(obj).validate();
      checked++;
    } catch (e) {
      console.error(`${name}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`crds.mjs (node ${process.version}): ${checked} objects valid, ${failed} invalid, ${unknown} without a model`);
process.exit(unknown ? 2 : failed ? 1 : 0);
