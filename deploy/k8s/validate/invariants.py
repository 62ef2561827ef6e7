#!/usr/bin/env python3
"""The invariants of chit's Kubernetes manifests, checked on rendered
kustomizations (validate.sh renders them), and the helpers validate.sh needs.

  invariants.py check --template SECRETS.yaml RENDER.yaml... [--standalone FILE...]
      Every check below on each render; standalone files (not part of any
      kustomization, such as alternatives/) get the pod security checks.
      Prints one line a violation, naming the render and the resource, and
      exits 1 if there is any.
  invariants.py self-test --template SECRETS.yaml RENDER.yaml
      Breaks a copy of RENDER once per check and shows each check fails with
      its message; also that RENDER itself passes.
  invariants.py split RENDER.yaml OUTDIR
      OUTDIR/core.yaml: the objects kubernetes-validate has schemas for;
      OUTDIR/models.json: the objects crds.mjs validates with npm models.
      A custom resource that neither handles is an error.
  invariants.py compare A.yaml B.yaml
      The same objects in both (order aside): kubectl kustomize against
      render.py.

The checks:
  workers    every container running `chit worker` passes --drain-timeout-secs,
             and its pod's terminationGracePeriodSeconds exceeds that plus
             --kill-grace-secs (default 5); it serves --health, has a liveness
             probe on /healthz, a readiness probe on /readyz, and cpu and memory
             requests and limits
  keda       every ScaledObject targets a Deployment of the same render that
             runs a worker, on a rabbitmq trigger that counts unacked messages
             (protocol http, mode QueueLength, excludeUnacknowledged not true)
             for a queue that worker consumes, through a TriggerAuthentication
             of the render; only keys KEDA knows; minReplicaCount 0 only with
             a chit/cold-start annotation; at most one autoscaler (ScaledObject
             or HPA) per Deployment
  security   every container (init containers too) runs as non-root: runAsNonRoot
             true and a non-zero runAsUser (its own or the pod's), no privilege
             escalation, ALL capabilities dropped, a read-only root filesystem,
             the RuntimeDefault seccomp profile; no host namespaces
  secrets    every Secret key referred to is in the Secret template
  wiring     every PodDisruptionBudget and Service selects a workload of the
             render (and a Service's named target ports exist); every
             Deployment has a PodDisruptionBudget; every chit pod is isolated
             by a NetworkPolicy for ingress and egress; every namespaced
             object is in the render's namespace
  rabbitmq   a RabbitmqCluster (no published model) has only the spec keys of
             the operator's API and an odd number of replicas, at least 3
"""

import copy
import json
import os
import re
import sys

import yaml

CORE_GROUPS = {
    "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io",
    "rbac.authorization.k8s.io", "storage.k8s.io", "scheduling.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io",
}
MODELED = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
CHECKED_HERE = {("rabbitmq.com/v1beta1", "RabbitmqCluster")}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}

# What KEDA reads (keda.sh docs, ScaledObject spec and the rabbitmq scaler):
# a misspelt key would be ignored by KEDA and by the models alike.
SCALEDOBJECT_SPEC_KEYS = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}
TRIGGER_KEYS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
RABBITMQ_METADATA_KEYS = {
    "host", "hostFromEnv", "usernameFromEnv", "passwordFromEnv", "protocol", "mode", "value",
    "activationValue", "queueName", "vhostName", "queueLength", "useRegex", "pageSize",
    "operation", "timeout", "excludeUnacknowledged", "unsafeSsl",
}
# rabbitmq.com/v1beta1 RabbitmqClusterSpec (the operator's API reference).
RABBITMQCLUSTER_SPEC_KEYS = {
    "replicas", "image", "imagePullSecrets", "service", "persistence", "resources", "affinity",
    "tolerations", "rabbitmq", "tls", "override", "terminationGracePeriodSeconds",
    "skipPostDeploySteps", "secretBackend", "delayStartSeconds", "autoEnableAllFeatureFlags",
}
COLD_START_ANNOTATION = "chit/cold-start"
DEFAULT_KILL_GRACE = 5


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def ref(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_spec(obj):
    spec = obj.get("spec", {}) or {}
    kind = obj.get("kind")
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    if kind in WORKLOADS:
        return spec.get("template", {}).get("spec")
    return None


def pod_labels(obj):
    if obj.get("kind") == "Pod":
        return obj.get("metadata", {}).get("labels", {}) or {}
    if obj.get("kind") == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"].get("metadata", {}).get("labels", {}) or {}
    return obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def containers(spec):
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            yield c


def flag(args, names):
    """The value of the first of `names` in `args` (`--f V` or `--f=V`)."""
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def flags(args, name):
    out = []
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith(name + "="):
            out.append(a.split("=", 1)[1])
    return out


def is_worker(c):
    argv = (c.get("command") or [])[1:] + (c.get("args") or [])
    return bool(argv) and argv[0] == "worker"


def env_value(c, name):
    for e in c.get("env") or []:
        if e.get("name") == name and "value" in e:
            return e["value"]
    return None


def selects(selector, labels):
    match = (selector or {}).get("matchLabels", {}) or {}
    if not match and not (selector or {}).get("matchExpressions"):
        return True
    return all(labels.get(k) == v for k, v in match.items())


def check_workers(objs, out):
    for obj in objs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for c in spec.get("containers") or []:
            if not is_worker(c):
                continue
            where = f"{ref(obj)} container {c.get('name')}"
            args = (c.get("command") or [])[1:] + (c.get("args") or [])
            drain = flag(args, ["--drain-timeout-secs", "--drain-timeout"])
            if drain is None:
                drain = env_value(c, "CHIT_DRAIN_TIMEOUT_SECS")
            kill = flag(args, ["--kill-grace-secs"])
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if drain is None:
                out.append(f"{where}: pass --drain-timeout-secs explicitly, so its relation to "
                           f"terminationGracePeriodSeconds ({grace}) is visible")
            else:
                kill_s = float(kill) if kill is not None else DEFAULT_KILL_GRACE
                if not grace > float(drain) + kill_s:
                    out.append(f"{ref(obj)}: terminationGracePeriodSeconds {grace} must exceed "
                               f"--drain-timeout-secs {drain} + --kill-grace-secs {kill_s:g} = "
                               f"{float(drain) + kill_s:g}, or Kubernetes kills tasks the worker is "
                               f"still draining")
            if flag(args, ["--health"]) is None and env_value(c, "CHIT_HEALTH_ADDR") is None:
                out.append(f"{where}: no --health address, so no /healthz or /readyz to probe")
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                p = c.get(probe)
                if not p:
                    out.append(f"{where}: no {probe}")
                elif (p.get("httpGet") or {}).get("path") != path:
                    out.append(f"{where}: {probe} must be GET {path}")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if not (res.get(part) or {}).get(r):
                        out.append(f"{where}: no resources.{part}.{r}")


def worker_capabilities(deployment):
    caps = set()
    for c in (pod_spec(deployment) or {}).get("containers") or []:
        if is_worker(c):
            args = (c.get("command") or [])[1:] + (c.get("args") or [])
            caps.update(v.split("=", 1)[0] for v in flags(args, "--capability"))
    return caps


def check_keda(objs, out):
    deployments = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o
                   for o in objs if o.get("kind") == "Deployment"}
    auths = {(o["metadata"].get("namespace"), o["metadata"]["name"])
             for o in objs if o.get("kind") == "TriggerAuthentication"}
    autoscalers = {}
    for obj in objs:
        ns = obj.get("metadata", {}).get("namespace")
        if obj.get("kind") == "HorizontalPodAutoscaler":
            t = obj["spec"]["scaleTargetRef"]
            autoscalers.setdefault((t.get("kind"), ns, t.get("name")), []).append(ref(obj))
        if obj.get("kind") != "ScaledObject":
            continue
        so = ref(obj)
        spec = obj.get("spec") or {}
        for key in sorted(set(spec) - SCALEDOBJECT_SPEC_KEYS):
            out.append(f"{so}: spec.{key} is not a ScaledObject field (KEDA would ignore it)")
        target = spec.get("scaleTargetRef") or {}
        kind = target.get("kind", "Deployment")
        autoscalers.setdefault((kind, ns, target.get("name")), []).append(so)
        deployment = deployments.get((ns, target.get("name")))
        if kind != "Deployment" or target.get("apiVersion", "apps/v1") != "apps/v1":
            out.append(f"{so}: scaleTargetRef must be an apps/v1 Deployment, not "
                       f"{target.get('apiVersion', 'apps/v1')} {kind}")
        elif deployment is None:
            out.append(f"{so}: scaleTargetRef names Deployment/{target.get('name')}, which is not "
                       f"in this render")
        caps = worker_capabilities(deployment) if deployment else set()
        if deployment is not None and not caps:
            out.append(f"{so}: Deployment/{target.get('name')} runs no `chit worker --capability`")
        if spec.get("minReplicaCount", 0) == 0 and not (
                obj["metadata"].get("annotations") or {}).get(COLD_START_ANNOTATION):
            out.append(f"{so}: minReplicaCount {spec.get('minReplicaCount', 0)} scales to zero; "
                       f"say what the cold start costs in a {COLD_START_ANNOTATION} annotation, "
                       f"or set minReplicaCount to 1")
        triggers = spec.get("triggers") or []
        if not any(t.get("type") == "rabbitmq" for t in triggers):
            out.append(f"{so}: no rabbitmq trigger")
        for i, t in enumerate(triggers):
            where = f"{so} trigger {i}"
            for key in sorted(set(t) - TRIGGER_KEYS):
                out.append(f"{where}: {key} is not a trigger field")
            if t.get("type") != "rabbitmq":
                continue
            md = t.get("metadata") or {}
            for key in sorted(set(md) - RABBITMQ_METADATA_KEYS):
                out.append(f"{where}: metadata.{key} is not a rabbitmq scaler parameter "
                           f"(KEDA would ignore it)")
            if md.get("protocol") != "http":
                out.append(f"{where}: protocol {md.get('protocol', 'auto')!r} counts ready messages "
                           f"only, not unacked ones (kedacore/keda#638, #5050): KEDA would scale "
                           f"down busy workers; use protocol: http")
            if md.get("mode") != "QueueLength":
                out.append(f"{where}: mode must be QueueLength (ready + unacked), not "
                           f"{md.get('mode')!r}")
            if str(md.get("excludeUnacknowledged", "false")).lower() == "true":
                out.append(f"{where}: excludeUnacknowledged \"true\" counts ready messages only; "
                           f"unacked (running) tasks must count")
            if "queueLength" in md:
                out.append(f"{where}: queueLength is deprecated; use mode: QueueLength and value")
            if "value" not in md:
                out.append(f"{where}: no value (messages per replica)")
            if md.get("host") or md.get("hostFromEnv"):
                out.append(f"{where}: credentials belong in a TriggerAuthentication, not in "
                           f"host/hostFromEnv")
            auth = (t.get("authenticationRef") or {}).get("name")
            if (ns, auth) not in auths:
                out.append(f"{where}: authenticationRef {auth!r} is not a TriggerAuthentication "
                           f"of this render")
            queue = md.get("queueName")
            if deployment is not None and caps and queue not in {f"chit.task.{c}" for c in caps}:
                out.append(f"{where}: queueName {queue!r} is not a queue Deployment/"
                           f"{target.get('name')} consumes ({', '.join(sorted('chit.task.' + c for c in caps))})")
    for (kind, _, name), owners in sorted(autoscalers.items(), key=str):
        if len(owners) > 1:
            out.append(f"{kind}/{name}: more than one autoscaler ({', '.join(owners)}); KEDA's HPA "
                       f"and another would fight over its replicas")


def effective(pod_sc, c_sc, key):
    if key in (c_sc or {}):
        return c_sc[key]
    return (pod_sc or {}).get(key)


def check_security(objs, out):
    for obj in objs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                out.append(f"{ref(obj)}: {host} is set")
        pod_sc = spec.get("securityContext") or {}
        for c in containers(spec):
            where = f"{ref(obj)} container {c.get('name')}"
            sc = c.get("securityContext") or {}
            if effective(pod_sc, sc, "runAsNonRoot") is not True:
                out.append(f"{where}: runAsNonRoot is not true (may run as root)")
            user = effective(pod_sc, sc, "runAsUser")
            if user is None:
                out.append(f"{where}: no runAsUser (the image's user decides; give a non-zero uid)")
            elif user == 0:
                out.append(f"{where}: runAsUser 0 is root")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                out.append(f"{where}: privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                out.append(f"{where}: capabilities.drop does not include ALL")
            if sc.get("readOnlyRootFilesystem") is not True:
                out.append(f"{where}: readOnlyRootFilesystem is not true")
            seccomp = effective(pod_sc, sc, "seccompProfile") or {}
            if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                out.append(f"{where}: no RuntimeDefault seccompProfile")


def secret_keys(template):
    keys = {}
    for obj in template:
        if obj.get("kind") == "Secret":
            names = set((obj.get("stringData") or {})) | set((obj.get("data") or {}))
            keys[obj["metadata"]["name"]] = names
    return keys


def check_secrets(objs, template, template_name, out):
    keys = secret_keys(template)

    def need(where, name, key):
        if name not in keys:
            out.append(f"{where}: Secret {name} is not in {template_name}")
        elif key is not None and key not in keys[name]:
            out.append(f"{where}: Secret {name} has no key {key} in {template_name}")

    for obj in objs:
        spec = pod_spec(obj)
        if spec is not None:
            for c in containers(spec):
                for e in c.get("env") or []:
                    r = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if r:
                        need(f"{ref(obj)} container {c.get('name')} env {e.get('name')}",
                             r.get("name"), r.get("key"))
                for e in c.get("envFrom") or []:
                    if e.get("secretRef"):
                        need(f"{ref(obj)} container {c.get('name')}", e["secretRef"].get("name"), None)
        if obj.get("kind") == "TriggerAuthentication":
            for r in (obj.get("spec") or {}).get("secretTargetRef") or []:
                need(f"{ref(obj)} parameter {r.get('parameter')}", r.get("name"), r.get("key"))


def check_wiring(objs, out):
    namespaces = {o["metadata"].get("namespace") for o in objs if o.get("kind") not in CLUSTER_SCOPED}
    if len(namespaces) > 1:
        for o in objs:
            if o.get("kind") not in CLUSTER_SCOPED and o["metadata"].get("namespace") is None:
                out.append(f"{ref(o)}: no namespace (the others are in {sorted(n for n in namespaces if n)}); "
                           f"is it outside a kustomization's namespace transformer?")
    workloads = [o for o in objs if pod_spec(o) is not None]
    pdbs = [o for o in objs if o.get("kind") == "PodDisruptionBudget"]
    for pdb in pdbs:
        if not any(selects(pdb["spec"].get("selector"), pod_labels(w)) for w in workloads):
            out.append(f"{ref(pdb)}: selects no workload of this render")
    for d in (o for o in objs if o.get("kind") == "Deployment"):
        if not any(selects(p["spec"].get("selector"), pod_labels(d)) for p in pdbs):
            out.append(f"{ref(d)}: no PodDisruptionBudget selects its pods")
    for svc in (o for o in objs if o.get("kind") == "Service"):
        sel = (svc.get("spec") or {}).get("selector") or {}
        backends = [w for w in workloads if sel and all(pod_labels(w).get(k) == v for k, v in sel.items())]
        if not backends:
            out.append(f"{ref(svc)}: selects no workload of this render")
        for port in (svc.get("spec") or {}).get("ports") or []:
            tp = port.get("targetPort")
            if isinstance(tp, str) and backends and not any(
                    p.get("name") == tp for w in backends for c in pod_spec(w).get("containers") or []
                    for p in c.get("ports") or []):
                out.append(f"{ref(svc)}: targetPort {tp} is no container port of its pods")
    policies = [o for o in objs if o.get("kind") == "NetworkPolicy"]
    for w in workloads:
        labels = pod_labels(w)
        if labels.get("app.kubernetes.io/name") != "chit":
            continue
        types = set()
        for p in policies:
            if selects(p["spec"].get("podSelector"), labels):
                types.update(p["spec"].get("policyTypes") or ["Ingress"])
        for t in ("Ingress", "Egress"):
            if t not in types:
                out.append(f"{ref(w)}: no NetworkPolicy isolates its pods for {t}")


def check_rabbitmq(objs, out):
    for obj in objs:
        if obj.get("kind") != "RabbitmqCluster":
            continue
        spec = obj.get("spec") or {}
        for key in sorted(set(spec) - RABBITMQCLUSTER_SPEC_KEYS):
            out.append(f"{ref(obj)}: spec.{key} is not a RabbitmqCluster field")
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 3 or replicas % 2 == 0:
            out.append(f"{ref(obj)}: replicas {replicas}: quorum queues need an odd number of "
                       f"nodes, at least 3, to keep a majority when one is lost")


def check_render(objs, template, template_name):
    out = []
    check_workers(objs, out)
    check_keda(objs, out)
    check_security(objs, out)
    check_secrets(objs, template, template_name, out)
    check_wiring(objs, out)
    check_rabbitmq(objs, out)
    return out


def find(objs, kind, name):
    for o in objs:
        if o.get("kind") == kind and o["metadata"]["name"] == name:
            return o
    raise SystemExit(f"self-test: the render has no {kind}/{name} to break")


def container(obj, name):
    for c in pod_spec(obj)["containers"]:
        if c["name"] == name:
            return c
    raise SystemExit(f"self-test: {ref(obj)} has no container {name}")


def drop_flag(c, name):
    args = c["args"]
    i = args.index(name)
    del args[i:i + 2]


def mutations():
    """(what is broken, how, the message the checks must then give)."""
    W, SO = "workers-command", "workers-command"

    def grace(objs):
        find(objs, "Deployment", W)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 60

    def no_drain(objs):
        drop_flag(container(find(objs, "Deployment", W), "worker"), "--drain-timeout-secs")

    def no_readiness(objs):
        del container(find(objs, "Deployment", W), "worker")["readinessProbe"]

    def no_liveness(objs):
        del container(find(objs, "Deployment", W), "worker")["livenessProbe"]

    def liveness_readyz(objs):
        container(find(objs, "Deployment", W), "worker")["livenessProbe"]["httpGet"]["path"] = "/readyz"

    def no_cpu_limit(objs):
        del container(find(objs, "Deployment", W), "worker")["resources"]["limits"]["cpu"]

    def no_memory_limit(objs):
        del container(find(objs, "Deployment", W), "worker")["resources"]["limits"]["memory"]

    def missing_target(objs):
        find(objs, "ScaledObject", SO)["spec"]["scaleTargetRef"]["name"] = "workers-gone"

    def amqp(objs):
        find(objs, "ScaledObject", SO)["spec"]["triggers"][0]["metadata"]["protocol"] = "amqp"

    def exclude_unacked(objs):
        find(objs, "ScaledObject", SO)["spec"]["triggers"][0]["metadata"]["excludeUnacknowledged"] = "true"

    def message_rate(objs):
        find(objs, "ScaledObject", SO)["spec"]["triggers"][0]["metadata"]["mode"] = "MessageRate"

    def misspelt(objs):
        md = find(objs, "ScaledObject", SO)["spec"]["triggers"][0]["metadata"]
        md["excludeUnacknowleged"] = md.pop("excludeUnacknowledged")

    def other_queue(objs):
        find(objs, "ScaledObject", SO)["spec"]["triggers"][0]["metadata"]["queueName"] = "chit.task.http.request"

    def zero_unexplained(objs):
        find(objs, "ScaledObject", SO)["spec"]["minReplicaCount"] = 0

    def two_autoscalers(objs):
        objs.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "cpu", "namespace": find(objs, "Deployment", W)["metadata"].get("namespace")},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": W},
                     "minReplicas": 1, "maxReplicas": 2},
        })

    def root_allowed(objs):
        container(find(objs, "Deployment", "chit-sink"), "sink")["securityContext"]["runAsNonRoot"] = False

    def uid_zero(objs):
        container(find(objs, "Deployment", "chit-gateway"), "gateway")["securityContext"]["runAsUser"] = 0

    def no_uid(objs):
        d = find(objs, "Job", "chit-topology")
        del container(d, "topology")["securityContext"]["runAsUser"]
        del pod_spec(d)["securityContext"]["runAsUser"]

    def writable_root(objs):
        container(find(objs, "Deployment", W), "worker")["securityContext"]["readOnlyRootFilesystem"] = False

    def secret_typo(objs):
        c = container(find(objs, "Deployment", W), "worker")
        c["env"][0]["valueFrom"]["secretKeyRef"]["key"] = "worker-commands-url"

    def pdb_selects_nothing(objs):
        find(objs, "PodDisruptionBudget", "chit-sink")["spec"]["selector"]["matchLabels"][
            "app.kubernetes.io/instance"] = "chit-sinks"

    def no_namespace(objs):
        del find(objs, "ScaledObject", SO)["metadata"]["namespace"]

    def two_node_broker(objs):
        find(objs, "RabbitmqCluster", "chit-rabbitmq")["spec"]["replicas"] = 2

    return [
        ("grace period below the drain", grace,
         "Deployment/workers-command: terminationGracePeriodSeconds 60 must exceed --drain-timeout-secs 120"),
        ("drain timeout left to its default", no_drain,
         "Deployment/workers-command container worker: pass --drain-timeout-secs explicitly"),
        ("no readiness probe", no_readiness, "Deployment/workers-command container worker: no readinessProbe"),
        ("no liveness probe", no_liveness, "Deployment/workers-command container worker: no livenessProbe"),
        ("liveness on /readyz", liveness_readyz,
         "Deployment/workers-command container worker: livenessProbe must be GET /healthz"),
        ("no cpu limit", no_cpu_limit, "Deployment/workers-command container worker: no resources.limits.cpu"),
        ("no memory limit", no_memory_limit,
         "Deployment/workers-command container worker: no resources.limits.memory"),
        ("ScaledObject on a missing Deployment", missing_target,
         "ScaledObject/workers-command: scaleTargetRef names Deployment/workers-gone, which is not in this render"),
        ("ScaledObject over AMQP", amqp, "ScaledObject/workers-command trigger 0: protocol 'amqp' counts ready messages only"),
        ("ScaledObject excluding unacked", exclude_unacked,
         "ScaledObject/workers-command trigger 0: excludeUnacknowledged \"true\" counts ready messages only"),
        ("ScaledObject on the publish rate", message_rate,
         "ScaledObject/workers-command trigger 0: mode must be QueueLength"),
        ("misspelt scaler parameter", misspelt,
         "ScaledObject/workers-command trigger 0: metadata.excludeUnacknowleged is not a rabbitmq scaler parameter"),
        ("ScaledObject on another group's queue", other_queue,
         "ScaledObject/workers-command trigger 0: queueName 'chit.task.http.request' is not a queue Deployment/workers-command consumes"),
        ("scale to zero unexplained", zero_unexplained,
         "ScaledObject/workers-command: minReplicaCount 0 scales to zero"),
        ("KEDA and an HPA on one Deployment", two_autoscalers,
         "Deployment/workers-command: more than one autoscaler"),
        ("runAsNonRoot false", root_allowed, "Deployment/chit-sink container sink: runAsNonRoot is not true"),
        ("runAsUser 0", uid_zero, "Deployment/chit-gateway container gateway: runAsUser 0 is root"),
        ("no runAsUser", no_uid, "Job/chit-topology container topology: no runAsUser"),
        ("writable root filesystem", writable_root,
         "Deployment/workers-command container worker: readOnlyRootFilesystem is not true"),
        ("Secret key not in the template", secret_typo,
         "Secret chit-broker has no key worker-commands-url"),
        ("PodDisruptionBudget selecting nothing", pdb_selects_nothing,
         "PodDisruptionBudget/chit-sink: selects no workload of this render"),
        ("an object outside the namespace", no_namespace,
         "ScaledObject/workers-command: no namespace"),
        ("two-node RabbitMQ cluster", two_node_broker,
         "RabbitmqCluster/chit-rabbitmq: replicas 2: quorum queues need an odd number"),
    ]


def self_test(template, template_name, render, render_name):
    base = load(render)
    problems = check_render(base, template, template_name)
    if problems:
        for p in problems:
            print(f"self-test: {render_name} itself fails: {p}")
        return 1
    failed = 0
    for what, breaks, expected in mutations():
        objs = copy.deepcopy(base)
        breaks(objs)
        got = check_render(objs, template, template_name)
        hits = [g for g in got if expected in g]
        if hits:
            print(f"self-test ok: {what}: {hits[0]}")
        else:
            failed += 1
            print(f"self-test FAILED: {what}: expected a violation containing {expected!r}, got {got}")
    print(f"self-test: {len(mutations()) - failed} passed, {failed} failed")
    return 1 if failed else 0


def split(render, outdir):
    core, models, problems = [], [], []
    for obj in load(render):
        api, kind = obj.get("apiVersion", ""), obj.get("kind")
        group = api.rpartition("/")[0]
        if group in CORE_GROUPS:
            core.append(obj)
            if kind == "Deployment":
                models.append(obj)
        elif (api, kind) in MODELED:
            models.append(obj)
        elif (api, kind) in CHECKED_HERE:
            pass
        else:
            problems.append(f"{render}: {ref(obj)} ({api}) has no validator: add a model to "
                            f"crds.mjs or checks to invariants.py")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "core.yaml"), "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=True)
    with open(os.path.join(outdir, "models.json"), "w") as f:
        json.dump(models, f)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


def compare(a, b):
    def index(path):
        return {(o.get("apiVersion"), o.get("kind"), o.get("metadata", {}).get("namespace"),
                 o.get("metadata", {}).get("name")): o for o in load(path)}
    x, y = index(a), index(b)
    diff = [f"only in {a}: {k}" for k in x.keys() - y.keys()]
    diff += [f"only in {b}: {k}" for k in y.keys() - x.keys()]
    diff += [f"differs: {k}" for k in x.keys() & y.keys() if x[k] != y[k]]
    for d in sorted(diff):
        print(d, file=sys.stderr)
    return 1 if diff else 0


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, rest = argv[1], argv[2:]
    if cmd == "split" and len(rest) == 2:
        return split(*rest)
    if cmd == "compare" and len(rest) == 2:
        return compare(*rest)
    if cmd in ("check", "self-test") and len(rest) >= 3 and rest[0] == "--template":
        template_path = rest[1]
        template = load(template_path)
        names = rest[2:]
        standalone = []
        if "--standalone" in names:
            i = names.index("--standalone")
            names, standalone = names[:i], names[i + 1:]
        if cmd == "self-test":
            if len(names) != 1:
                sys.exit("self-test takes one render")
            return self_test(template, template_path, names[0], names[0])
        total = 0
        for name in names:
            problems = check_render(load(name), template, template_path)
            for p in problems:
                print(f"invariant violated: {name}: {p}")
            total += len(problems)
        for name in standalone:
            problems = []
            check_security(load(name), problems)
            check_rabbitmq(load(name), problems)
            for p in problems:
                print(f"invariant violated: {name}: {p}")
            total += len(problems)
        print(f"invariants: {len(names)} renders and {len(standalone)} standalone files, "
              f"{total} violations")
        return 1 if total else 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
