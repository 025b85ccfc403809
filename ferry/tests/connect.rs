//! HTTP/JSON against the calculator over HTTP/1.1 and HTTP/2: Connect unary calls, REST routes
//! from `google.api.http`, error shapes and bad input.

use ferry_test_support::start_echo_calculator;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn clients() -> [(&'static str, reqwest::Client); 2] {
    [
        (
            "HTTP/1.1",
            reqwest::Client::builder().http1_only().build().unwrap(),
        ),
        (
            "HTTP/2",
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap(),
        ),
    ]
}

async fn post(client: &reqwest::Client, url: &str, body: &str) -> (StatusCode, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("a response");
    let status = response.status();
    let json = response.json::<Value>().await.expect("a JSON body");
    (status, json)
}

#[tokio::test]
async fn connect_unary_calls() {
    let server = start_echo_calculator().await;
    let base = format!("http://{}", server.local_addr());
    for (name, client) in clients() {
        let url = format!("{base}/calculator.v1.Calculator/Add");
        let (status, body) = post(&client, &url, r#"{"a":1,"b":2}"#).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"result": 3})),
            "{name}"
        );

        let url = format!("{base}/calculator.v1.Calculator/Divide");
        let (status, body) = post(&client, &url, r#"{"a":1,"b":4}"#).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"result": 0.25})),
            "{name}"
        );

        // Zero values are omitted, per the canonical mapping.
        let url = format!("{base}/calculator.v1.Calculator/Multiply");
        let (status, body) = post(&client, &url, r#"{"a":0,"b":2}"#).await;
        assert_eq!((status, body), (StatusCode::OK, json!({})), "{name}");

        let url = format!("{base}/calculator.v1.Calculator/Divide");
        let (status, body) = post(&client, &url, r#"{"a":1,"b":0}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(body["code"], "invalid_argument", "{name}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("divide 1 by zero"),
            "{name}: {body}"
        );

        // Metadata travels as headers both ways.
        let response = client
            .post(format!("{base}/calculator.v1.Calculator/Add"))
            .header("content-type", "application/json")
            .header("x-echo-trace", "abc")
            .body(r#"{"a":1,"b":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-echo-trace"], "abc", "{name}");

        // Connect's timeout header becomes the deadline.
        let response = client
            .post(format!("{base}/calculator.v1.Calculator/Add"))
            .header("content-type", "application/json")
            .header("connect-timeout-ms", "100")
            .header("x-sleep-ms", "3000")
            .body(r#"{"a":1,"b":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "deadline_exceeded", "{name}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rest_routes_from_google_api_http() {
    let server = start_echo_calculator().await;
    let base = format!("http://{}", server.local_addr());
    for (name, client) in clients() {
        let (status, body) = post(&client, &format!("{base}/add"), r#"{"a":1,"b":2}"#).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"result": 3})),
            "{name}"
        );
        let (status, body) = post(&client, &format!("{base}/subtract"), r#"{"a":1,"b":2}"#).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"result": -1})),
            "{name}"
        );

        // What `curl -d '{"a":1,"b":2}' host/add` sends: a form content type with a JSON body.
        let response = client
            .post(format!("{base}/multiply"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(r#"{"a":3,"b":2}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"result": 6})
        );

        // GET with path variables (additional binding).
        let response = client
            .get(format!("{base}/divide/9/3"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"result": 3})
        );

        let response = client
            .get(format!("{base}/divide/1/0"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_400() {
    let server = start_echo_calculator().await;
    let base = format!("http://{}", server.local_addr());
    let client = reqwest::Client::new();
    let cases = [
        ("/add", r#"{"a":1,"#, "invalid JSON"),
        ("/add", r#"{"a":"one"}"#, "invalid JSON"),
        ("/add", r#"[1,2]"#, "JSON object"),
        (
            "/calculator.v1.Calculator/Add",
            r#"{"a":1,"#,
            "invalid JSON",
        ),
    ];
    for (path, body, hint) in cases {
        let (status, json) = post(&client, &format!("{base}{path}"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(json["code"], "invalid_argument", "{path} {body}");
        let message = json["message"].as_str().unwrap();
        assert!(message.contains(hint), "{path} {body}: {message}");
        assert!(
            message.contains("calculator.v1.CalculateRequest"),
            "{message}"
        );
    }

    let (status, json) = post(&client, &format!("{base}/nowhere"), "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["code"], "not_found");

    let (status, json) = post(
        &client,
        &format!("{base}/calculator.v1.Calculator/Modulo"),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["code"], "unimplemented");

    let response = client
        .post(format!("{base}/add"))
        .header("content-type", "text/plain")
        .body("1 + 2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // The server is unharmed.
    let (status, _) = post(&client, &format!("{base}/add"), r#"{"a":1,"b":2}"#).await;
    assert_eq!(status, StatusCode::OK);

    // Fields the schema does not know are ignored by default (a client built from a newer
    // schema keeps working), and refused when the server asks for it.
    let (status, json) = post(&client, &format!("{base}/add"), r#"{"a":1,"b":2,"c":3}"#).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["result"], 3);
    let strict = ferry::Server::builder()
        .add_service(calculator::service())
        .reject_unknown_json_fields(true)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let strict_base = format!("http://{}", strict.local_addr());
    for path in ["/add", "/calculator.v1.Calculator/Add"] {
        let (status, json) =
            post(&client, &format!("{strict_base}{path}"), r#"{"a":1,"c":2}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(json["code"], "invalid_argument");
        let message = json["message"].as_str().unwrap();
        assert!(
            message.contains("c") && message.contains("calculator.v1.CalculateRequest"),
            "{message}"
        );
    }
}
