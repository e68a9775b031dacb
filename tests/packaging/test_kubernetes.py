"""deploy/kubernetes and deploy/helm/swarmreg as an operator applies them: every object is valid
against the Kubernetes API's schemas (kubernetes-validate's, carried offline, strict: no unknown
field) of a fixed Kubernetes version; the ConfigMap's configs load with the daemon's own loader
and agree with the workloads that mount them (paths, ports, probes, the stop deadline, the
image's user); and the chart, rendered by the real helm, gives the same objects as the plain
manifests with its default values, and valid ones with others."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from swarmreg.cli import _parser
from swarmreg.config import Address, Config, load_config
from swarmreg.daemon import stop_deadline
from tests.conftest import free_port

from .commands import DaemonCommand, pull_through
from .conftest import REPO

KUBERNETES_VERSION = "1.30.0"  # the oldest API the manifests are meant for; its schemas ship offline
MANIFESTS = REPO / "deploy" / "kubernetes"
CHART = REPO / "deploy" / "helm" / "swarmreg"
RELEASE = "swarmreg"  # `helm install swarmreg deploy/helm/swarmreg` names the objects as the manifests do
# What only Helm adds: its labels, and the annotation that rolls pods when the config changes.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
HELM_ANNOTATIONS = ("checksum/config",)

Objects = dict[tuple[str, str], dict[str, Any]]


def by_kind_and_name(documents: list[Any]) -> Objects:
    objects: Objects = {}
    for document in documents:
        if document is None:  # an empty document between two ---
            continue
        key = (document["kind"], document["metadata"]["name"])
        assert key not in objects, f"{key} twice"
        objects[key] = document
    return objects


def manifests() -> Objects:
    documents = [document for path in sorted(MANIFESTS.glob("*.yaml"))
                 for document in yaml.safe_load_all(path.read_text())]
    return by_kind_and_name(documents)


def helm_binary() -> str:
    """helm: on PATH, or the venv's (scripts/test installs it there with scripts/install_helm.py)."""
    local = Path(sys.executable).with_name("helm")
    found = shutil.which("helm") or (str(local) if local.exists() else None)
    if found is None:
        pytest.skip("helm not found: scripts/install_helm.py installs it (scripts/test does)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def render(*options: str, release: str = RELEASE) -> Objects:
    """``helm template``: the chart's objects as helm would install them."""
    return by_kind_and_name(list(yaml.safe_load_all(helm("template", release, str(CHART), *options).stdout)))


def validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_manifests_are_valid_kubernetes_objects() -> None:
    objects = manifests()
    assert sorted(objects) == [("ConfigMap", "swarmreg-config"), ("DaemonSet", "swarmreg-agent"),
                               ("Service", "swarmreg"), ("Service", "swarmreg-herd"),
                               ("StatefulSet", "swarmreg-herd")]
    for document in objects.values():
        validate(document)


@pytest.mark.parametrize("breakage", ["unknown field", "wrong type", "missing field"])
def test_the_validator_refuses_a_broken_manifest(breakage: str) -> None:
    daemonset = copy.deepcopy(manifests()[("DaemonSet", "swarmreg-agent")])
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    if breakage == "unknown field":
        container["hostport"] = 16000
    elif breakage == "wrong type":
        container["ports"][0]["hostPort"] = "16000"
    else:
        del daemonset["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(daemonset)


def configs(objects: Objects, tmp_path: Path, name: str = RELEASE) -> dict[str, Config]:
    """Each config of the ConfigMap as the daemon loads it (a stand-in for the mounted secret)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    loaded = {}
    for key, text in objects[("ConfigMap", f"{name}-config")]["data"].items():
        path = tmp_path / key
        path.write_text(text)
        loaded[key] = load_config(path, [f"cluster.secret_file={secret}"])  # refuses bad keys and types
        assert loaded[key].cluster.secret == "s3cret"
    return loaded


def test_the_configmaps_configs_load(tmp_path: Path) -> None:
    assert set(configs(manifests(), tmp_path)) == {"herd.toml", "agent.toml"}


def image_uid() -> int:
    """The Containerfile's ``USER uid:gid``."""
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Containerfile").read_text(), re.M)
    assert user, "no numeric USER in the Containerfile"
    return int(user[1])


# Which config key each named container port serves.
PORT_KEYS = {"proxy": "proxy.listen", "peer": "swarm.listen", "origin": "origin.listen",
             "tracker": "tracker.listen", "index": "index.listen", "registry": "agent.registry_listen",
             "agent": "agent.listen"}
WORKLOADS = {("StatefulSet", "swarmreg-herd"): ("origin,tracker,index,proxy", "herd.toml"),
             ("DaemonSet", "swarmreg-agent"): ("agent", "agent.toml")}


def setting(config: Config, key: str) -> Address:
    section, name = key.split(".")
    address: Address = getattr(getattr(config, section), name)
    return address


def check_workload(objects: Objects, key: tuple[str, str], loaded: dict[str, Config], raw: dict[str, str]) -> None:
    """The workload runs the daemon with the roles and config it should, mounted where the config
    says, its ports, probes and stop deadline those of the config."""
    roles, config_name = WORKLOADS[key]
    workload = objects[key]
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = _parser().parse_args(container["args"])  # the image's ENTRYPOINT is swarmreg
    assert (args.command, args.roles) == ("daemon", roles)
    config = loaded[config_name]

    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    config_volume = volumes[mounts["config"]["name"]]["configMap"]
    assert config_volume["name"] == "swarmreg-config" and ("ConfigMap", config_volume["name"]) in objects
    items = {item["path"]: item["key"] for item in config_volume["items"]}
    assert items[str(Path(args.config).relative_to(mounts["config"]["mountPath"]))] == config_name
    secret_file = tomllib_value(raw[config_name], "cluster", "secret_file")
    secret_volume = volumes["secret"]["secret"]
    assert secret_file == f"{mounts['secret']['mountPath']}/{secret_volume['items'][0]['path']}"
    assert secret_volume["defaultMode"] == 0o440 and secret_volume["items"][0]["key"] == "secret"
    assert config.data_dir == mounts["data"]["mountPath"]
    if key[0] == "StatefulSet":
        assert [claim["metadata"]["name"] for claim in workload["spec"]["volumeClaimTemplates"]] == ["data"]
    else:
        assert "emptyDir" in volumes["data"]

    ports = {port["name"]: port for port in container["ports"]}
    for name, port in ports.items():
        assert setting(config, PORT_KEYS[name]).port == port["containerPort"], name
        assert setting(config, PORT_KEYS[name]).host == "0.0.0.0", name  # reachable from outside the pod
    for probe in ("readinessProbe", "livenessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/health" and http["port"] in ("proxy", "origin", "agent"), http

    deadline = stop_deadline(config)
    assert deadline < pod["terminationGracePeriodSeconds"] <= deadline + 10
    security = pod["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == image_uid() == security["fsGroup"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]

    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


def tomllib_value(text: str, *path: str) -> Any:
    value: Any = tomllib.loads(text)
    for part in path:
        value = value[part]
    return value


def check_services(objects: Objects, loaded: dict[str, Config], name: str = RELEASE) -> None:
    """The Services select the herd's pod on its named ports, and the names the configs dial are
    theirs: [cluster] origins the headless Service, the agents' tracker and index the client one."""
    herd = objects[("StatefulSet", f"{name}-herd")]
    pod_labels = herd["spec"]["template"]["metadata"]["labels"]
    (container,) = herd["spec"]["template"]["spec"]["containers"]
    named = {port["name"]: port["containerPort"] for port in container["ports"]}
    services = {key: service for (kind, key), service in objects.items() if kind == "Service"}
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for port in service["spec"]["ports"]:
            assert named[port["targetPort"]] == port["port"], port
    headless = services[herd["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]

    def served_by(address: Address) -> str:
        (found,) = [key for key, service in services.items()
                    if address.host == key and address.port in [port["port"] for port in service["spec"]["ports"]]]
        return found

    origins = loaded["herd.toml"].cluster.origins
    assert isinstance(origins, Address), "a DNS name: the headless Service's records"
    assert served_by(origins) == headless["metadata"]["name"]
    agent = loaded["agent.toml"].agent
    assert served_by(agent.tracker) == served_by(agent.index) != headless["metadata"]["name"]


def check_agent_host_port(objects: Objects, loaded: dict[str, Config], host_port: int,
                          name: str = RELEASE) -> None:
    (container,) = objects[("DaemonSet", f"{name}-agent")]["spec"]["template"]["spec"]["containers"]
    (registry,) = [port for port in container["ports"] if "hostPort" in port]
    assert registry["name"] == "registry" and registry["hostPort"] == host_port
    assert registry["containerPort"] == loaded["agent.toml"].agent.registry_listen.port


def test_the_manifests_agree_with_their_configs_and_the_image(tmp_path: Path) -> None:
    objects = manifests()
    loaded = configs(objects, tmp_path)
    raw = objects[("ConfigMap", "swarmreg-config")]["data"]
    for key in WORKLOADS:
        check_workload(objects, key, loaded, raw)
    check_services(objects, loaded)
    check_agent_host_port(objects, loaded, 16000)


def without_helm_metadata(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` less what only Helm adds (HELM_LABELS, HELM_ANNOTATIONS), wherever it is."""
    document = copy.deepcopy(document)
    metadatas = [document["metadata"]]
    if "template" in document.get("spec", {}):
        metadatas.append(document["spec"]["template"]["metadata"])
    for metadata in metadatas:
        for label in HELM_LABELS:
            assert metadata.get("labels", {}).pop(label, None) is not None, (document["kind"], label)
        annotations = metadata.get("annotations", {})
        for annotation in HELM_ANNOTATIONS:
            annotations.pop(annotation, None)
        if "annotations" in metadata and not annotations:
            del metadata["annotations"]
    return document


def test_helm_lints_the_chart() -> None:
    done = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in done.stdout, done.stdout


def test_the_chart_with_default_values_renders_the_plain_manifests() -> None:
    rendered = render()
    plain = manifests()
    assert sorted(rendered) == sorted(plain)
    for key, document in rendered.items():
        assert without_helm_metadata(document) == plain[key], key
    # What Helm adds is there: its labels, and a checksum of the config on each pod.
    statefulset = rendered[("StatefulSet", "swarmreg-herd")]
    assert statefulset["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert re.fullmatch(r"[0-9a-f]{64}", statefulset["spec"]["template"]["metadata"]["annotations"]["checksum/config"])


def test_the_rendered_chart_is_valid() -> None:
    for document in render().values():
        validate(document)


def test_the_charts_values_change_the_objects_consistently(tmp_path: Path) -> None:
    default = render()
    objects = render("--set", "image.tag=1.2.3", "--set", "agent.hostPort=17000", "--set", "herd.storage.size=5Gi",
                     "--set", "herd.storage.storageClassName=fast", release="edge")
    for document in objects.values():
        validate(document)
    # Named after the release ("edge-swarmreg-..."); the configs dial the renamed Services.
    name = "edge-swarmreg"
    assert sorted(objects) == sorted((kind, key.replace("swarmreg", name, 1)) for kind, key in default)
    loaded = configs(objects, tmp_path, name)
    assert str(loaded["herd.toml"].cluster.origins) == f"{name}-herd:15002"
    check_services(objects, loaded, name)
    check_agent_host_port(objects, loaded, 17000, name)
    herd = objects[("StatefulSet", f"{name}-herd")]
    assert herd["spec"]["template"]["spec"]["containers"][0]["image"] == "swarmreg:1.2.3"
    claim = herd["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast" and claim["resources"]["requests"]["storage"] == "5Gi"
    # Another config is another checksum: the pods roll.
    checksum = "checksum/config"
    assert (herd["spec"]["template"]["metadata"]["annotations"][checksum]
            != default[("StatefulSet", "swarmreg-herd")]["spec"]["template"]["metadata"]["annotations"][checksum])


def test_the_values_follow_their_schema_and_helm_enforces_it() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    done = helm("template", RELEASE, str(CHART), "--set", "agent.hostPort=sixteen", check=False)
    assert done.returncode != 0 and "/agent/hostPort" in done.stderr, done.stderr
    done = helm("template", RELEASE, str(CHART), "--set", "agnet.hostPort=1", check=False)
    assert done.returncode != 0 and "agnet" in done.stderr, done.stderr


def container_command(objects: Objects, key: tuple[str, str], tmp_path: Path, secret: Path,
                      addresses: dict[str, str], overrides: list[str]) -> DaemonCommand:
    """The workload's container as the kubelet runs it: the image's ENTRYPOINT (swarmreg, this
    checkout here) with the container's args, its config from the ConfigMap, its named ports on
    the free ports of ``addresses`` (127.0.0.1 stands for the pod's IP), the Secret at a file of
    its own; stopped with the image's STOPSIGNAL within terminationGracePeriodSeconds."""
    pod = objects[key]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = list(container["args"])
    config_name = WORKLOADS[key][1]
    config = tmp_path / config_name
    config.write_text(objects[("ConfigMap", "swarmreg-config")]["data"][config_name])
    args[args.index("--config") + 1] = str(config)
    ports = [f"{PORT_KEYS[port['name']]}={addresses[port['name']]}" for port in container["ports"]]
    stop = re.search(r"^STOPSIGNAL (\w+)$", (REPO / "Containerfile").read_text(), re.M)
    assert stop, "no STOPSIGNAL in the Containerfile"
    return DaemonCommand(key[1], args, tmp_path / key[1], [f"cluster.secret_file={secret}", *ports, *overrides],
                         stop_signal=signal.Signals[stop[1]], stop_timeout=pod["terminationGracePeriodSeconds"])


async def assert_probes_pass(objects: Objects, key: tuple[str, str], addresses: dict[str, str]) -> None:
    (container,) = objects[key]["spec"]["template"]["spec"]["containers"]
    async with httpx.AsyncClient(timeout=10) as client:
        for probe in ("readinessProbe", "livenessProbe"):
            http = container[probe]["httpGet"]
            response = await client.get(f"http://{addresses[http['port']]}{http['path']}")
            assert response.status_code == 200, (key, probe, response.text)


@pytest.mark.slow
async def test_the_workloads_run_pass_their_probes_serve_a_pull_and_stop_in_time(
        tmp_path: Path, commands: list[DaemonCommand]) -> None:
    objects = manifests()
    secret = tmp_path / "swarmreg-cluster-secret"
    secret.write_text(os.urandom(24).hex() + "\n")
    secret.chmod(0o600)
    herd_key, agent_key = ("StatefulSet", "swarmreg-herd"), ("DaemonSet", "swarmreg-agent")
    herd_ports = {name: f"127.0.0.1:{free_port()}" for name in ("proxy", "peer", "origin", "tracker", "index")}
    # [cluster] origins, the headless Service's records, are the pod's IP: 127.0.0.1 here.
    herd = container_command(objects, herd_key, tmp_path, secret, herd_ports,
                             [f'cluster.origins=["{herd_ports["origin"]}"]'])
    commands.append(herd)
    await herd.start()
    await assert_probes_pass(objects, herd_key, herd_ports)

    # The agents' tracker and index: the client Service, which is the herd's pod here.
    agent_ports = {name: f"127.0.0.1:{free_port()}" for name in ("registry", "peer", "agent")}
    agent = container_command(objects, agent_key, tmp_path, secret, agent_ports,
                              [f"agent.tracker={herd_ports['tracker']}", f"agent.index={herd_ports['index']}"])
    commands.append(agent)
    await agent.start()
    await assert_probes_pass(objects, agent_key, agent_ports)

    await pull_through(f"http://{herd_ports['proxy']}", f"http://{agent_ports['registry']}", "test/kubernetes")
    for command in (agent, herd):
        elapsed, status = await command.stop()
        assert status == 0 and "stopped" in command.log.read_text(), command.log.read_text()
        assert elapsed < command.stop_timeout
