//! The `latency` policy end to end: the shipped example zone served by the
//! real server, asked over real UDP with ECS, and explained through the
//! real admin API.

use hickory_proto::rr::RecordType;

use crate::harness::{TestServer, a_answers, ecs_of, repo};
use crate::health::reqwest_like;

fn example() -> String {
    std::fs::read_to_string(repo().join("zones/examples/latency.example.toml"))
        .expect("zones/examples/latency.example.toml")
}

/// Ask `name` from the client network `ecs`: the first address and the
/// ECS scope.
async fn ask(s: &TestServer, name: &str, ecs: &str) -> (String, u8) {
    let m = s.ask(name, RecordType::A, Some(ecs)).await;
    let a = a_answers(&m);
    assert!(!a.is_empty(), "no answer for {name} from {ecs}: {m:?}");
    (a[0].clone(), ecs_of(&m).expect("ECS echoed").2)
}

/// Out of the box nothing is measured: the distance model ranks, and the
/// scope is the GeoIP block the estimate came from.
#[tokio::test]
async fn without_measurements_the_distance_model_ranks() {
    let s = TestServer::start(&[("latency.example.toml", &example())]).await;
    for (client, want) in [
        ("11.2.3.0/24", "198.51.100.81"), // Germany: eu-west
        ("11.3.0.0/24", "203.0.113.81"),  // Japan: ap-northeast
        ("11.1.7.0/24", "192.0.2.81"),    // the US: us-east
    ] {
        let (addr, scope) = ask(&s, "www.latency.example.com", client).await;
        assert_eq!(addr, want, "from {client}");
        assert_eq!(scope, 16, "the GeoIP block of {client}");
    }

    // explain names the level and every estimate.
    let admin = reqwest_like::Client::new(s.server.admin_addr().expect("admin API"));
    let (code, body) = admin
        .get("/explain?name=www.latency.example.com&type=A&client=11.2.3.0/24")
        .await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stage = &v["service"]["stages"][0];
    assert_eq!(stage["step"], "latency", "{v}");
    let note = stage["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("decided by distance"), "{note}");
    for dc in ["us-east", "eu-west", "ap-northeast"] {
        assert!(note.contains(&format!("{dc} ")), "{dc} in {note}");
    }
    assert_eq!(v["service"]["chosen"], serde_json::json!(["eu-west"]));
}
