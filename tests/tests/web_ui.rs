//! The web UI in headless Chromium, against an aggregator filled by a real
//! workload on the local control plane: kubectl in an intercepted pod writes
//! a custom resource four times and reads ConfigMaps. The page must draw
//! exactly the operations the report counts as hit, zoom into a group, show
//! a field tree, redraw when new records arrive, and show the custom
//! resource's timeline, a diff and a bisect. Screenshots go to
//! `$APIWITNESS_SCREENSHOTS` (the ones in docs/ come from here).

use apiwitness_e2e::aggregator::{StoreKind, token_of};
use apiwitness_e2e::browser::Browser;
use apiwitness_e2e::intercepted::{InterceptedPod, InterceptorOptions};
use apiwitness_e2e::postgres_crd::CrdScenario;
use apiwitness_e2e::{Cluster, wait_until};
use fantoccini::Locator;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(30);

fn screenshots() -> PathBuf {
    std::env::var_os("APIWITNESS_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"))
}

fn postgres(ns: &str, replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "postgrescontroller.kubeplus/v1", "kind": "Postgres",
        "metadata": {"name": "orders-db", "namespace": ns},
        "spec": {"replicas": replicas, "image": image, "users": [{"name": "alice", "role": "reader"}]}})
}

fn kubectl(pod: &InterceptedPod, cluster: &Cluster, args: &[&str], input: Option<&Value>) {
    let binary = cluster.bin("kubectl");
    let mut command = vec![binary.to_str().unwrap()];
    command.extend_from_slice(args);
    let out = match input {
        Some(v) => pod.exec_stdin(&command, &v.to_string()),
        None => pod.exec(&command),
    }
    .unwrap();
    assert!(
        out.success,
        "kubectl {args:?}: {}\ninterceptor log:\n{}",
        out.stderr,
        pod.log()
    );
}

#[test]
fn the_web_ui_draws_a_real_workloads_coverage_and_provenance_on_sqlite() {
    web_ui(StoreKind::Sqlite, "webui", true);
}

/// The same on PostgreSQL, whose queries for scopes and object search are
/// their own.
#[test]
fn the_web_ui_draws_a_real_workloads_coverage_and_provenance_on_postgres() {
    web_ui(StoreKind::Postgres, "webui-pg", false);
}

fn web_ui(store: StoreKind, prefix: &str, take_screenshots: bool) {
    let scenario = CrdScenario::start(prefix, store, "pods,postgreses.postgrescontroller.kubeplus");
    let (cluster, aggregator, certify) =
        (scenario.cluster, &scenario.aggregator, &scenario.certify);
    let n = scenario.ns.name.as_str();
    let ingest = aggregator.ingest_url();
    let pod = InterceptedPod::start_app(
        cluster,
        n,
        InterceptorOptions::shipping_to(&certify.url, &ingest),
    );

    kubectl(
        &pod,
        cluster,
        &["create", "-f", "-"],
        Some(&postgres(n, 1, "postgres:15")),
    );
    kubectl(
        &pod,
        cluster,
        &[
            "patch",
            "postgres",
            "orders-db",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":2}}"#,
        ],
        None,
    );
    kubectl(
        &pod,
        cluster,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&postgres(n, 3, "postgres:16")),
    );
    kubectl(
        &pod,
        cluster,
        &["get", "postgres", "orders-db", "-o", "name"],
        None,
    );

    let token = token_of(cluster, n, "reader").unwrap();
    let versions_path = format!("/provenance/namespaces/{n}/postgres/orders-db/versions");
    wait_until(
        "the custom resource's versions are stored",
        PATIENCE,
        || {
            aggregator
                .get_json(&versions_path, Some(&token))
                .ok()
                .filter(|v| v["versions"].as_array().is_some_and(|a| a.len() >= 3))
        },
    )
    .unwrap();

    // What the UI lists and reads, as the reader may see it, and not more.
    let scopes = aggregator.get_json("/scopes", Some(&token)).unwrap();
    assert_eq!(scopes["namespaces"], json!([n]), "{scopes}");
    assert_eq!(scopes["cluster"], json!(false), "{scopes}");
    let pod_name = scopes["pods"][0]["name"].as_str().unwrap().to_string();
    let nobody = token_of(cluster, n, "nobody").unwrap();
    let hidden = aggregator.get_json("/scopes", Some(&nobody)).unwrap();
    assert_eq!(hidden["namespaces"], json!([]), "{hidden}");
    assert_eq!(hidden["pods"], json!([]), "{hidden}");
    let objects = aggregator
        .get_json("/objects?kind=Postgres", Some(&nobody))
        .unwrap();
    assert_eq!(objects["objects"], json!([]), "{objects}");
    assert_eq!(aggregator.get("/scopes", None).unwrap().0, 401);

    let report = aggregator
        .get_json(&format!("/coverage/{n}/{pod_name}"), Some(&token))
        .unwrap();
    let hit: Vec<String> = report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["hits"].as_u64() > Some(0))
        .map(|o| o["operation_id"].as_str().unwrap().to_string())
        .collect();
    let create = "createPostgrescontrollerKubeplusV1NamespacedPostgres";
    assert!(hit.iter().any(|h| h == create), "{report}");
    assert!(!hit.iter().any(|h| h == "listCoreV1NamespacedConfigMap"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = Browser::start(1280, 800).await.unwrap();
        let b = &browser;
        // Only one of the runs writes the screenshots.
        let shots = if take_screenshots {
            screenshots()
        } else {
            std::env::temp_dir().join(format!("apiwitness-screenshots-{n}"))
        };
        let coverage_url = format!(
            "{}/ui/#/coverage?scope=pod&namespace={n}&pod={pod_name}",
            aggregator.url
        );
        b.client.goto(&coverage_url).await.unwrap();

        // The reader signs in with its token, kept in the tab only.
        b.type_into("#token", &token).await.unwrap();
        b.click("#token-form button[type=submit]").await.unwrap();
        b.wait_for("svg.sunburst path.leaf", PATIENCE).await.unwrap();
        assert!(b.text_of("h1").await.contains(&pod_name));

        // Exactly the operations the report counts as hit are drawn as hit.
        for id in &hit {
            let arc = b
                .client
                .find(Locator::Css(&format!("path[data-operation=\"{id}\"]")))
                .await
                .unwrap_or_else(|e| panic!("no arc for {id}: {e}"));
            assert_eq!(arc.attr("data-state").await.unwrap().as_deref(), Some("hit"), "{id}");
            assert_eq!(arc.attr("fill").await.unwrap().as_deref(), Some("#2f9e5b"), "{id}");
        }
        let drawn_hit = b
            .client
            .find_all(Locator::Css("path.leaf[data-state=\"hit\"]"))
            .await
            .unwrap()
            .len();
        assert_eq!(drawn_hit, hit.len());
        let untouched = b
            .client
            .find(Locator::Css("path[data-operation=\"deleteCoreV1NamespacedConfigMap\"]"))
            .await
            .unwrap();
        assert_ne!(untouched.attr("data-state").await.unwrap().as_deref(), Some("hit"));
        b.screenshot(&shots.join("ui-coverage.png")).await.unwrap();

        // New records redraw the page without a reload.
        kubectl(&pod, cluster, &["get", "configmaps", "-n", n], None);
        b.wait_for(
            "path[data-operation=\"listCoreV1NamespacedConfigMap\"][data-state=\"hit\"]",
            PATIENCE,
        )
        .await
        .unwrap();

        // The fields the create set, in the schema's tree.
        b.click(&format!("tr[data-operation=\"{create}\"] td button.link")).await.unwrap();
        b.wait_for(
            &format!("tr[data-fields-of=\"{create}\"] li[data-field=\"spec.replicas\"][data-state=\"hit\"]"),
            PATIENCE,
        )
        .await
        .unwrap();

        // A click into the custom resource's group zooms there, and the
        // link says so.
        let group = "stable/postgrescontroller.kubeplus/v1";
        b.click(&format!("path[data-node=\"{group}\"]")).await.unwrap();
        b.wait_until(
            "the breadcrumb shows the group",
            "return (document.querySelector('.crumbs [aria-current]')||{}).textContent === 'postgrescontroller.kubeplus/v1'",
            PATIENCE,
        )
        .await
        .unwrap();
        let url = b.client.current_url().await.unwrap().to_string();
        assert!(url.contains("zoom=stable%2Fpostgrescontroller.kubeplus%2Fv1"), "{url}");
        let rows = b
            .client
            .find_all(Locator::Css("#operations tbody tr[data-operation]"))
            .await
            .unwrap();
        for row in rows {
            let id = row.attr("data-operation").await.unwrap().unwrap_or_default();
            assert!(id.contains("PostgrescontrollerKubeplus"), "{id} is outside the zoom");
        }
        b.screenshot(&shots.join("ui-coverage-group.png")).await.unwrap();

        // The shared link opens the same view in a fresh page.
        b.open(&url).await.unwrap();
        b.wait_until(
            "the shared link opens zoomed",
            "return (document.querySelector('.crumbs [aria-current]')||{}).textContent === 'postgrescontroller.kubeplus/v1'",
            PATIENCE,
        )
        .await
        .unwrap();

        // The keyboard: Enter on the focused centre zooms out one level.
        b.type_into("g.centre.zoomable", "\u{E007}").await.unwrap();
        b.wait_until(
            "Enter on the centre zooms out to the level",
            "return (document.querySelector('.crumbs [aria-current]')||{}).textContent === 'stable'",
            PATIENCE,
        )
        .await
        .unwrap();

        // Provenance: search, open the timeline, compare the first and the
        // last version.
        b.client
            .goto(&format!("{}/ui/#/provenance?kind=Postgres&namespace={n}", aggregator.url))
            .await
            .unwrap();
        b.click("#objects a").await.unwrap();
        b.wait_for("#timeline tbody tr[data-ordinal=\"3\"]", PATIENCE).await.unwrap();
        b.click("#timeline tr[data-ordinal=\"1\"] input[name=a]").await.unwrap();
        b.wait_until(
            "the diff of versions 1 and the last shows the replicas change",
            "const t = document.querySelector('#diff'); return !!t && t.querySelector('th').textContent === 'A: version 1' && [...t.querySelectorAll('tr[data-change=changed]')].some(r => r.textContent.includes('replicas: 1') && r.textContent.includes('replicas: 3'))",
            PATIENCE,
        )
        .await
        .unwrap();

        // Bisect: the first version with 2 replicas.
        b.type_into("#bisect-field", "spec.replicas").await.unwrap();
        b.type_into("#bisect-value", "2").await.unwrap();
        b.click("#bisect-form button").await.unwrap();
        b.wait_for("#timeline tr.first[data-ordinal=\"2\"]", PATIENCE)
            .await
            .unwrap();
        assert!(b.text_of(".bisect-answer").await.contains("version 2"));
        b.client
            .execute("window.scrollTo(0, 0)", vec![])
            .await
            .unwrap();
        b.screenshot(&shots.join("ui-provenance.png")).await.unwrap();
        b.client
            .execute(
                "document.querySelector('.bisect-answer').scrollIntoView()",
                vec![],
            )
            .await
            .unwrap();
        b.screenshot(&shots.join("ui-provenance-diff.png"))
            .await
            .unwrap();

        // A time window: the last hour holds every call, a window that
        // starts after them none.
        b.open(&format!("{coverage_url}&window=1h")).await.unwrap();
        let hit_arcs = format!(
            "return document.querySelectorAll('svg.sunburst path.leaf[data-state=hit]').length === {}",
            hit.len() + 1
        );
        b.wait_until("the last hour's hits", &hit_arcs, PATIENCE)
            .await
            .unwrap();
        b.open(&format!("{coverage_url}&since=2099-01-01T00:00:00Z")).await.unwrap();
        b.wait_until(
            "no hits after the calls",
            "return document.querySelectorAll('svg.sunburst path.leaf').length > 0 && document.querySelectorAll('svg.sunburst path.leaf[data-state=hit]').length === 0",
            PATIENCE,
        )
        .await
        .unwrap();

        // A narrow screen: no sideways scrolling of the page itself.
        b.client.set_window_size(414, 896).await.unwrap();
        b.client.goto(&coverage_url).await.unwrap();
        b.wait_for("svg.sunburst path.leaf", PATIENCE).await.unwrap();
        let overflow = b
            .client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await
            .unwrap();
        assert!(overflow.as_i64().unwrap_or(99) <= 1, "the page scrolls sideways by {overflow}");
        b.screenshot(&shots.join("ui-coverage-narrow.png")).await.unwrap();
        browser.close().await;
        if !take_screenshots {
            let _ = std::fs::remove_dir_all(&shots);
        }
    });
}
