"""Offline checks of deploy/ (called by scripts/test.sh): kubectl cannot validate without a
cluster (its client dry-run still asks the API server for the kinds), so the manifests are
checked here. They parse; the Job is an Indexed Job whose parallelism equals its completions
and whose command runs `sockstorm run ... --segment auto --segments N --start-at ... --json -`
with N = completions; the ConfigMap it mounts exists and holds a scenario that sockstorm
accepts (run against a closed loopback port for 1 s with the Job's own flags, JOB_COMPLETION_INDEX
set as Kubernetes would); the sbatch recipe runs one `--segment auto` task per Slurm task and
merges; the Dockerfile has a build stage and a runtime stage.
Usage: check_deploy.py SOCKSTORM_BINARY"""
import os
import subprocess
import sys
import tempfile

import yaml

bin_ = sys.argv[1]
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy")


def fail(msg):
    print(f"deploy check FAILED: {msg}")
    sys.exit(1)


docs = {}
for name in ("job.yaml", "configmap.yaml"):
    with open(os.path.join(root, "kubernetes", name)) as f:
        for d in yaml.safe_load_all(f):
            docs[d["kind"]] = d
job, cm = docs.get("Job"), docs.get("ConfigMap")
if not job or not cm:
    fail(f"expected a Job and a ConfigMap, found {sorted(docs)}")
spec = job["spec"]
if spec.get("completionMode") != "Indexed":
    fail("the Job is not an Indexed Job (completionMode: Indexed)")
n = spec["completions"]
if spec.get("parallelism") != n:
    fail(f"parallelism {spec.get('parallelism')} != completions {n}: segments would not start together")
pod = spec["template"]["spec"]
if pod.get("restartPolicy") != "Never":
    fail("restartPolicy must be Never: a restarted segment would count twice")
c = pod["containers"][0]
args = c["args"]
want = {"--segment": "auto", "--segments": str(n), "--json": "-"}
for flag, value in want.items():
    if flag not in args or args[args.index(flag) + 1] != value:
        fail(f"the container's args lack `{flag} {value}`: {args}")
if "--start-at" not in args:
    fail("the container's args lack --start-at")
mounted = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
if cm["metadata"]["name"] not in mounted:
    fail(f"the Job mounts {mounted}, not the ConfigMap {cm['metadata']['name']}")

# The scenario and the Job's flags, as sockstorm reads them (a closed port: every connect is
# refused, which is fine; a bad file or flag would exit 2).
with tempfile.TemporaryDirectory() as tmp:
    scenario = os.path.join(tmp, "scenario.toml")
    with open(scenario, "w") as f:
        f.write(cm["data"]["scenario.toml"])
    run_args = [a for a in args]
    run_args[run_args.index("/scenario/scenario.toml")] = scenario
    i = run_args.index("--start-at")
    run_args[i + 1] = "+1s"
    run_args[run_args.index("--json") + 1] = os.path.join(tmp, "r.json")
    cmd = [bin_] + run_args + ["--url", "ws://127.0.0.1:9/ws", "-c", str(n), "--connect-rate", "100", "-d", "1s"]
    env = dict(os.environ, JOB_COMPLETION_INDEX="0")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    if r.returncode == 2:
        fail(f"sockstorm refused the Job's scenario or flags:\n{r.stderr}")

with open(os.path.join(root, "slurm", "sockstorm.sbatch")) as f:
    sbatch = f.read()
for needle in ("srun", "--segment auto", "--start-at", " merge "):
    if needle not in sbatch:
        fail(f"the sbatch recipe lacks `{needle}`")
with open(os.path.join(root, "Dockerfile")) as f:
    stages = [l for l in f if l.startswith("FROM ")]
if len(stages) != 2:
    fail(f"the Dockerfile should have a build and a runtime stage, has {len(stages)}")
print(f"deploy: Indexed Job of {n} segments, its scenario and flags accepted by sockstorm; sbatch and Dockerfile checked")
