//! The admin listener: operational routes only, the public port reduced to the API, and CPU
//! and heap profiling (pprof protobuf and flame graphs) only there and only when enabled.

use pprof::protos::Message;

use crate::helpers::*;

fn with_admin(s: &mut floodgate::Settings) {
    s.server.admin_address = Some("127.0.0.1:0".parse().unwrap());
}

#[tokio::test]
async fn the_public_port_can_serve_only_the_api() {
    let app = spawn_with(|s| {
        with_admin(s);
        s.server.public_operational_routes = false;
    })
    .await;
    for path in ["/health", "/metrics", "/openapi.json", "/docs"] {
        assert_envelope(app.get(path).await, 404, "NOT_FOUND").await;
        let r = app.client.get(app.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on the admin listener");
    }
    assert_eq!(app.compute("fast", 4).await.status(), 200);
}

#[tokio::test]
async fn profiling_is_off_by_default_and_never_public() {
    let app = spawn_with(with_admin).await;
    let r = app
        .client
        .get(app.admin_url("/debug/pprof/profile?seconds=1"))
        .send()
        .await
        .unwrap();
    assert_envelope(r, 404, "NOT_FOUND").await;
    let app = spawn_with(|s| {
        with_admin(s);
        s.server.profiling = true;
    })
    .await;
    assert_envelope(
        app.get("/debug/pprof/profile?seconds=1").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_envelope(app.get("/debug/pprof/heap").await, 404, "NOT_FOUND").await;
    let app = spawn_with(with_admin).await;
    let r = app
        .client
        .get(app.admin_url("/debug/pprof/heap"))
        .send()
        .await
        .unwrap();
    assert_envelope(r, 404, "NOT_FOUND").await;
}

/// A heap profile taken from the real binary (its allocator is jemalloc) while it serves
/// load: gzipped pprof that the pprof format's own definition decodes, with samples of live
/// bytes and the allocation sites named, floodgate's own among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_profiles_under_load_name_the_allocation_sites() {
    use std::io::Read;
    let app = spawn_binary(&[
        ("ADMIN_PORT", "127.0.0.1:0"),
        ("FLOODGATE__SERVER__PROFILING", "true"),
        // Every call is to be answered 200: eight clients on the intensive endpoint of a
        // debug build on a busy machine queue past `admission.target_delay`, and adaptive
        // admission refuses part of that by design (tested in overload.rs).
        ("FLOODGATE__ADMISSION__ADAPTIVE", "false"),
        // jemalloc samples one allocation per 128 KiB on average (the binary's setting), so a
        // fresh service's small live heap can hold no sample at all: a clean-clone run once
        // dumped an empty profile. One per KiB gives the live heap many samples (a profile
        // of 179 KB instead of 10 KB after 50 calls) without changing what a profile is.
        ("_RJEM_MALLOC_CONF", "lg_prof_sample:10"),
    ])
    .await;
    let admin = app.admin.expect("admin listener");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load: Vec<_> = (0..8)
        .map(|i| {
            let (base, stop) = (app.base.clone(), std::sync::Arc::clone(&stop));
            let served = std::sync::Arc::clone(&served);
            tokio::spawn(async move {
                let c = client();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5_000 {
                    let r = c
                        .post(format!("{base}/api/v1/compute/intensive"))
                        .header("content-type", "application/json")
                        .body(format!("{{\"number\": {}}}", i * 10_000 + n))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    n += 1;
                }
                n
            })
        })
        .collect();
    // The profile is taken mid-load: once the load is under way, and bounded in time.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while served.load(std::sync::atomic::Ordering::Relaxed) < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "load did not get going"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = client()
        .get(format!("http://{admin}/debug/pprof/heap"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let gz = r.bytes().await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        assert!(task.await.unwrap() > 0, "load was running");
    }
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .expect("gzip");
    let profile = pprof::protos::Profile::decode(raw.as_slice()).expect("pprof protobuf");
    let string = |i: i64| profile.string_table[i as usize].as_str();
    let types: Vec<_> = profile.sample_type.iter().map(|t| string(t.ty)).collect();
    assert!(types.iter().any(|t| t.contains("space")), "{types:?}");
    assert!(!profile.sample.is_empty(), "no samples");
    assert!(profile
        .sample
        .iter()
        .any(|s| s.value.iter().any(|v| *v > 0)));
    let functions: Vec<_> = profile.function.iter().map(|f| string(f.name)).collect();
    assert!(
        functions.iter().any(|f| f.contains("floodgate")),
        "no floodgate allocation site among {} functions: {:?}",
        functions.len(),
        &functions[..functions.len().min(40)]
    );
    // Every sample's stack resolves to locations and functions the profile defines.
    let locations: std::collections::HashSet<u64> = profile.location.iter().map(|l| l.id).collect();
    assert!(profile
        .sample
        .iter()
        .all(|s| s.location_id.iter().all(|id| locations.contains(id))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profiles_come_as_pprof_or_flame_graphs() {
    let app = std::sync::Arc::new(
        spawn_with(|s| {
            with_admin(s);
            s.server.profiling = true;
        })
        .await,
    );
    // Keep the CPU busy with intensive requests while sampling.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (app, done) = (std::sync::Arc::clone(&app), std::sync::Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(app.compute("intensive", 99).await.status(), 200);
            }
        })
    };
    let c = &app.client;
    // Two at once: whichever starts second is refused while the other samples.
    let (first, second) = tokio::join!(
        c.get(app.admin_url("/debug/pprof/profile?seconds=1"))
            .send(),
        c.get(app.admin_url("/debug/pprof/profile?seconds=1"))
            .send(),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let (proto, busy) = if first.status() == 503 {
        (second, first)
    } else {
        (first, second)
    };
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_envelope(busy, 503, "PROFILER_BUSY").await;
    assert_eq!(proto.status(), 200);
    assert_eq!(proto.headers()["content-type"], "application/octet-stream");
    let profile = pprof::protos::Profile::decode(proto.bytes().await.unwrap()).unwrap();
    assert!(!profile.sample.is_empty(), "no samples");
    assert!(
        profile.string_table.iter().any(|s| s.contains("floodgate")),
        "no floodgate frames"
    );
    let svg = c
        .get(app.admin_url("/debug/pprof/profile?seconds=1&format=flamegraph"))
        .send()
        .await
        .unwrap();
    assert_eq!(svg.status(), 200);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let text = svg.text().await.unwrap();
    assert!(text.contains("<svg"), "{}", &text[..text.len().min(200)]);
    assert!(
        text.contains("floodgate"),
        "a flame graph of floodgate's frames"
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();

    let bad = c
        .get(app.admin_url("/debug/pprof/profile?seconds=0"))
        .send()
        .await
        .unwrap();
    assert_envelope(bad, 400, "INVALID_REQUEST").await;
}
