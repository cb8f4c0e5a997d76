#!/usr/bin/env python3
"""The image test (make image-test): inspects the archive `make image` wrote, as a user would get it.

    image-test.py ARCHIVE                         all checks below; exit 1 on the first failure
    image-test.py --digest ARCHIVE                print the image's manifest digest
    image-test.py --add-docker-manifest ARCHIVE NAME
                                                  add a `docker save` manifest.json (used by image.sh)

Checks: one linux/amd64 image in the OCI layout; its config runs /deployer-operator (entrypoint,
cmd `run`) as 65532:65532; its files are exactly the binary, /etc/passwd and /etc/group with the
user 65532, and Debian's CA bundle (so no shell, no libc, no package manager); the binary is a
static ELF; the image and the archive stay under IMAGE_MAX_MB (30); the docker-save index names the
same config and layers. Then the image's filesystem runs under runc the way deploy/ runs the pod
(uid/gid 65532, read-only root, no capabilities, no new privileges, no network but loopback): the
entrypoint must print `--version` and exactly crds/deployer.yaml for `crd`.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MB = float(os.environ.get("IMAGE_MAX_MB", "30"))
# The image's whole filesystem (directories aside).
EXPECTED_FILES = {
    "deployer-operator",
    "etc/passwd",
    "etc/group",
    "etc/ssl/certs/ca-certificates.crt",
}


def fail(msg):
    print(f"image-test: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print(f"image-test: ok: {msg}")


def blob_name(digest):
    algo, hexa = digest.split(":", 1)
    return f"blobs/{algo}/{hexa}"


class Archive:
    def __init__(self, path):
        self.path = path
        self.tar = tarfile.open(path, "r:")
        self.names = {m.name.lstrip("./") for m in self.tar.getmembers()}

    def read(self, name):
        member = self.tar.getmember(name) if name in self.tar.getnames() else self.tar.getmember("./" + name)
        return self.tar.extractfile(member).read()

    def blob(self, digest, verify=True):
        data = self.read(blob_name(digest))
        if verify and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            fail(f"blob {digest} does not match its digest")
        return data

    def manifest(self):
        index = json.loads(self.read("index.json"))
        manifests = index.get("manifests", [])
        if len(manifests) != 1:
            fail(f"index.json lists {len(manifests)} manifests, want 1")
        desc = manifests[0]
        return desc, json.loads(self.blob(desc["digest"]))


def add_docker_manifest(path, name):
    a = Archive(path)
    _, manifest = a.manifest()
    a.tar.close()
    entry = [{
        "Config": blob_name(manifest["config"]["digest"]),
        "RepoTags": [name],
        "Layers": [blob_name(l["digest"]) for l in manifest["layers"]],
    }]
    data = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
    with tarfile.open(path, "a:") as t:
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        t.addfile(info, io.BytesIO(data))


def layer_files(a, manifest):
    """The image's filesystem: path -> (TarInfo, bytes or None), layers applied in order."""
    files = {}
    for layer in manifest["layers"]:
        raw = a.blob(layer["digest"])
        if layer["mediaType"].endswith("+gzip") or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as t:
            for m in t.getmembers():
                path = m.name.lstrip("./").rstrip("/")
                if not path:
                    continue
                base = os.path.basename(path)
                if base.startswith(".wh."):
                    gone = os.path.join(os.path.dirname(path), base[4:])
                    files = {p: v for p, v in files.items() if p != gone and not p.startswith(gone + "/")}
                    continue
                data = t.extractfile(m).read() if m.isreg() else None
                files[path] = (m, data)
    return files


def elf_is_static(data):
    if data[:4] != b"\x7fELF" or data[4] != 2:
        fail("/deployer-operator is not a 64-bit ELF file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 not in types  # PT_INTERP: a dynamic loader is needed


def run_under_runc(files, config, tmp):
    """Runs the entrypoint with `--version` and `crd` under runc, as the pod runs it."""
    if os.geteuid() != 0:
        fail("running the image under runc needs root (make image-test runs as root in CI)")
    runc = shutil.which("runc")
    if not runc:
        fail("runc not found (apt-get install runc)")
    rootfs = os.path.join(tmp, "bundle", "rootfs")
    for path, (m, data) in files.items():
        dest = os.path.join(rootfs, path)
        if m.isdir():
            os.makedirs(dest, exist_ok=True)
        elif m.isreg():
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(data)
            os.chmod(dest, m.mode)
    cfg = config["config"]
    user = cfg["User"].split(":")
    outputs = {}
    for i, args in enumerate((["--version"], ["crd"])):
        spec = {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": int(user[0]), "gid": int(user[1])},
                "args": cfg["Entrypoint"] + args,
                # The in-cluster environment is not needed for these two commands: empty.
                "env": cfg.get("Env") or [],
                "cwd": cfg.get("WorkingDir") or "/",
                "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
                "noNewPrivileges": True,
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            },
            "root": {"path": "rootfs", "readonly": True},
            "hostname": "image-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            ],
            "linux": {
                "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"],
            },
        }
        with open(os.path.join(tmp, "bundle", "config.json"), "w") as f:
            json.dump(spec, f)
        cid = f"deployer-image-test-{os.getpid()}-{i}"
        state = os.path.join(tmp, "runc-state")
        try:
            p = subprocess.run([runc, "--root", state, "run", "--bundle", os.path.join(tmp, "bundle"), cid],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        finally:
            subprocess.run([runc, "--root", state, "delete", "--force", cid], capture_output=True)
        if p.returncode != 0:
            fail(f"under runc, {spec['process']['args']} exited {p.returncode}: {p.stderr.decode()[-2000:]}")
        outputs[args[0]] = p.stdout.decode()
    return outputs


def check(path):
    if not os.path.isfile(path):
        fail(f"{path} does not exist: run make image")
    a = Archive(path)
    for required in ("oci-layout", "index.json", "manifest.json"):
        if required not in a.names:
            fail(f"{required} missing from the archive")
    desc, manifest = a.manifest()
    ref = desc.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
    ok(f"OCI layout: one manifest {desc['digest']} ({manifest.get('mediaType')}), name {ref or '(none)'}")

    config = json.loads(a.blob(manifest["config"]["digest"]))
    cfg = config.get("config", {})
    if (config.get("os"), config.get("architecture")) != ("linux", "amd64"):
        fail(f"platform {config.get('os')}/{config.get('architecture')}, want linux/amd64")
    if cfg.get("User") != "65532:65532":
        fail(f"User is {cfg.get('User')!r}, want '65532:65532'")
    if cfg.get("Entrypoint") != ["/deployer-operator"] or cfg.get("Cmd") != ["run"]:
        fail(f"Entrypoint {cfg.get('Entrypoint')} Cmd {cfg.get('Cmd')}, want ['/deployer-operator'] ['run']")
    if cfg.get("ExposedPorts") or cfg.get("Volumes"):
        fail(f"unexpected ports/volumes: {cfg.get('ExposedPorts')} {cfg.get('Volumes')}")
    ok(f"config: linux/amd64, User {cfg['User']}, Entrypoint {cfg['Entrypoint']}, Cmd {cfg['Cmd']}, "
       f"Env {cfg.get('Env') or []}, created {config.get('created')}")

    docker = json.loads(a.read("manifest.json"))
    want_layers = [blob_name(l["digest"]) for l in manifest["layers"]]
    if len(docker) != 1 or docker[0]["Config"] != blob_name(manifest["config"]["digest"]) \
            or docker[0]["Layers"] != want_layers:
        fail(f"manifest.json (docker save index) differs from the OCI manifest: {docker}")
    ok(f"docker-save index: {docker[0]['RepoTags']}, same config and {len(want_layers)} layer(s)")

    files = layer_files(a, manifest)
    regular = {p for p, (m, _) in files.items() if not m.isdir()}
    if regular != EXPECTED_FILES:
        fail(f"the image's files are {sorted(regular)}, want exactly {sorted(EXPECTED_FILES)}")
    shells = [p for p in files if os.path.basename(p) in ("sh", "bash", "dash", "ash", "busybox")]
    if shells:
        fail(f"a shell in the image: {shells}")
    ok(f"files: exactly {', '.join('/' + p for p in sorted(EXPECTED_FILES))} (no shell, no libc)")

    m, binary = files["deployer-operator"]
    if m.mode & 0o777 != 0o755 or m.uid != 0:
        fail(f"/deployer-operator mode {oct(m.mode)} owner {m.uid}, want 0755 root")
    if not elf_is_static(binary):
        fail("/deployer-operator needs a dynamic loader (PT_INTERP): not static")
    ok(f"/deployer-operator: static ELF (no PT_INTERP), {len(binary)} bytes, mode 0755")

    passwd = files["etc/passwd"][1].decode()
    group = files["etc/group"][1].decode()
    if not any(l.split(":")[2:4] == ["65532", "65532"] for l in passwd.splitlines()):
        fail(f"/etc/passwd has no user 65532:65532:\n{passwd}")
    if not any(l.split(":")[2:3] == ["65532"] for l in group.splitlines()):
        fail(f"/etc/group has no group 65532:\n{group}")
    ok("/etc/passwd and /etc/group: " + [l for l in passwd.splitlines() if ":65532:" in l][0])

    bundle = files["etc/ssl/certs/ca-certificates.crt"][1].decode()
    count = bundle.count("-----BEGIN CERTIFICATE-----")
    if count < 100 or count != bundle.count("-----END CERTIFICATE-----"):
        fail(f"/etc/ssl/certs/ca-certificates.crt holds {count} certificates, want a full bundle (>= 100)")
    if shutil.which("openssl"):
        p = subprocess.run(["openssl", "storeutl", "-noout", "-certs", "/dev/stdin"], input=bundle.encode(),
                           capture_output=True)
        if p.returncode != 0 or f"Total found: {count}" not in p.stdout.decode() + p.stderr.decode():
            fail(f"openssl cannot read all {count} certificates of the bundle: {p.stderr.decode()[-500:]}")
    # The build may trust this machine's own CAs (e.g. a TLS-inspecting proxy's) for its downloads;
    # none of them may end up in the image.
    local_dir = "/usr/local/share/ca-certificates"
    body = "".join(bundle.split())
    for root, _, names in os.walk(local_dir):
        for name in names:
            with open(os.path.join(root, name), errors="replace") as f:
                pem = f.read()
            for block in pem.split("-----BEGIN CERTIFICATE-----")[1:]:
                b64 = "".join(block.split("-----END CERTIFICATE-----")[0].split())
                if b64 and b64 in body:
                    fail(f"the image's CA bundle contains this machine's own CA {os.path.join(root, name)}")
    ok(f"/etc/ssl/certs/ca-certificates.crt: {count} certificates, all parsed by openssl, "
       f"none of this machine's own ({local_dir})")

    compressed = sum(l["size"] for l in manifest["layers"])
    unpacked = sum(len(d) for _, d in files.values() if d is not None)
    archive = os.path.getsize(path)
    limit = MAX_MB * 1024 * 1024
    if max(compressed, unpacked, archive) > limit:
        fail(f"too big: layers {compressed} B compressed, {unpacked} B unpacked, archive {archive} B; limit {MAX_MB} MB")
    ok(f"size: {unpacked / 1048576:.1f} MiB unpacked, {compressed / 1048576:.1f} MiB compressed, "
       f"archive {archive / 1048576:.1f} MiB (limit {MAX_MB:g} MB)")

    with tempfile.TemporaryDirectory(prefix="image-test-") as tmp:
        out = run_under_runc(files, config, tmp)
    if not out["--version"].startswith("deployer-operator "):
        fail(f"--version printed {out['--version']!r}")
    with open(os.path.join(ROOT, "crds", "deployer.yaml")) as f:
        if out["crd"] != f.read():
            fail("`deployer-operator crd` in the image differs from crds/deployer.yaml")
    ok(f"runs under runc as 65532:65532, read-only root, no capabilities, no new privileges: "
       f"'{out['--version'].strip()}', and `crd` prints crds/deployer.yaml")
    print(f"image-test: all checks passed for {path} ({desc['digest']})")


def main(argv):
    if len(argv) == 3 and argv[0] == "--add-docker-manifest":
        add_docker_manifest(argv[1], argv[2])
    elif len(argv) == 2 and argv[0] == "--digest":
        print(Archive(argv[1]).manifest()[0]["digest"])
    elif len(argv) == 1:
        check(argv[0])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
