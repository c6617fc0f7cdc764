//! The OpenAPI 3.1 document, built from the same route table as the router
//! (`super::routes`), so a route cannot exist without being documented. `Doc` is what each
//! route says about itself.

use serde_json::{Map, Value, json};

/// One route's documentation.
pub struct Doc {
    pub method: &'static str,
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub auth: bool,
    /// (name, description, JSON Schema as text)
    pub query: &'static [(&'static str, &'static str, &'static str)],
    /// A component name (a JSON object), `yaml` (a YAML or JSON media type), `json` (any JSON
    /// value), or `any` (any bytes, any Content-Type: webhooks from outside senders).
    pub body: Option<&'static str>,
    /// (status, description, component name / `html` / `openapi`)
    pub responses: &'static [(u16, &'static str, &'static str)],
}

fn envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["success", "data"],
        "properties": {"success": {"const": true}, "data": data}
    })
}

fn components() -> Value {
    let ts = json!({"type": "string", "format": "date-time"});
    let nullable_ts = json!({"type": ["string", "null"], "format": "date-time"});
    let status = json!({"type": "string", "enum": ["PENDING", "RUNNING", "WAITING", "PAUSED", "COMPLETED", "FAILED", "CANCELLED"]});
    let step_status = json!({"type": "string", "enum": ["PENDING", "RUNNING", "COMPLETED", "FAILED", "SKIPPED", "WAITING", "CANCELLED"]});
    json!({
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["success", "error"],
                "properties": {
                    "success": {"const": false},
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": ["VALIDATION_ERROR", "AUTH_ERROR", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "METHOD_NOT_ALLOWED", "UNAVAILABLE", "INTERNAL_ERROR"]},
                            "message": {"type": "string"},
                            "details": {}
                        }
                    }
                }
            },
            "PendingAction": {
                "type": ["object", "null"],
                "properties": {
                    "step": {"type": "string"},
                    "type": {"type": "string", "enum": ["approval", "external_event", "wait"]},
                    "message": {"type": "string"},
                    "options": {"type": "array", "items": {"type": "string"}},
                    "signalType": {"type": "string"}
                }
            },
            "Run": {
                "type": "object",
                "required": ["id", "workspaceId", "definitionId", "status", "input", "output", "currentStepIndex", "createdAt", "updatedAt"],
                "properties": {
                    "id": {"type": "string", "pattern": "^wfrun_"},
                    "workspaceId": {"type": "string"},
                    "definitionId": {"type": "string", "pattern": "^wfdef_"},
                    "definitionSlug": {"type": "string"},
                    "status": status,
                    "input": {"type": "object"},
                    "output": {},
                    "error": {},
                    "idempotencyKey": {"type": ["string", "null"]},
                    "currentStepIndex": {"type": "integer"},
                    "attempt": {"type": "integer"},
                    "pendingAction": {"$ref": "#/components/schemas/PendingAction"},
                    "waitingOn": {"type": ["object", "null"], "description": "What a PAUSED or WAITING run waits on: label `Waiting on hook` (approval, external_event) or `Sleeping` (wait, with `until`), and the step.", "properties": {"label": {"type": "string"}, "step": {"type": "string"}, "type": {"type": "string"}, "until": nullable_ts}},
                    "parentRunId": {"type": ["string", "null"]},
                    "createdAt": ts,
                    "updatedAt": ts,
                    "startedAt": nullable_ts,
                    "finishedAt": nullable_ts,
                    "queueMs": {"type": ["integer", "null"]},
                    "durationMs": {"type": ["integer", "null"]},
                    "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
                    "trigger": {"type": "object"},
                    "trace": {"type": "array", "items": {"type": "object"}}
                }
            },
            "Step": {
                "type": "object",
                "required": ["name", "index", "type", "status"],
                "properties": {
                    "name": {"type": "string"},
                    "index": {"type": "integer"},
                    "type": {"type": "string"},
                    "status": step_status,
                    "attempt": {"type": "integer"},
                    "output": {},
                    "error": {},
                    "usage": {},
                    "startedAt": nullable_ts,
                    "finishedAt": nullable_ts,
                    "durationMs": {"type": ["integer", "null"]},
                    "attempts": {"type": "array", "items": {"type": "object"}}
                }
            },
            "CreateRun": {
                "type": "object",
                "required": ["definitionId"],
                "additionalProperties": false,
                "properties": {
                    "definitionId": {"type": "string", "minLength": 1, "description": "A definition id (slug, latest version) or an exact wfdef_ version id."},
                    "input": {"type": "object", "description": "Validated against the definition's input schema (defaults to {})."},
                    "idempotencyKey": {"type": "string", "minLength": 1, "maxLength": 255}
                }
            },
            "Resume": {
                "type": "object",
                "additionalProperties": false,
                "description": "{signalType, payload} for a WAITING run; {step, input} or {input: {resume: {step, input}}} for a PAUSED approval.",
                "properties": {
                    "signalType": {"type": "string", "minLength": 1},
                    "payload": {"type": "object"},
                    "step": {"type": "string", "minLength": 1},
                    "input": {}
                }
            },
            "AgentWorkflow": {
                "type": "object",
                "required": ["input"],
                "additionalProperties": false,
                "properties": {
                    "input": {
                        "type": "object",
                        "required": ["task"],
                        "additionalProperties": false,
                        "properties": {
                            "task": {"type": "string", "minLength": 1, "description": "What the workflow is to do; recorded in the run's trigger."},
                            "state": {"type": "object", "description": "The workflow's input (validated against its input schema)."}
                        }
                    }
                }
            },
            "AgentRun": {
                "type": "object",
                "required": ["output", "run_id"],
                "properties": {
                    "run_id": {"type": "string", "pattern": "^wfrun_"},
                    "output": {
                        "type": "object",
                        "required": ["status", "steps", "result", "pendingAction"],
                        "properties": {
                            "status": {"type": "string", "enum": ["running", "paused", "completed", "failed", "cancelled"]},
                            "steps": {"type": "array", "items": {"type": "object", "required": ["name", "status"], "properties": {"name": {"type": "string"}, "status": {"type": "string"}, "output": {}, "error": {}}}},
                            "result": {},
                            "pendingAction": {"$ref": "#/components/schemas/PendingAction"},
                            "error": {}
                        }
                    }
                }
            },
            "Definition": {
                "type": "object",
                "required": ["id", "definitionId", "version"],
                "properties": {
                    "id": {"type": "string", "pattern": "^wfdef_"},
                    "definitionId": {"type": "string"},
                    "version": {"type": "integer"},
                    "label": {"type": ["string", "null"]},
                    "hash": {"type": "string"},
                    "createdAt": ts,
                    "source": {"type": "string"},
                    "versions": {"type": "array", "items": {"type": "object"}}
                }
            },
            "Hook": {
                "type": "object",
                "required": ["token", "status", "resumeUrl"],
                "properties": {
                    "token": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "resumed", "closed"]},
                    "step": {"type": "string"},
                    "type": {"type": "string"},
                    "resumeUrl": {"type": "string", "format": "uri"},
                    "createdAt": ts,
                    "resumedAt": nullable_ts
                }
            },
            "Meta": {
                "type": "object",
                "required": ["page", "pageSize", "total", "totalPages"],
                "properties": {
                    "page": {"type": "integer", "minimum": 1},
                    "pageSize": {"type": "integer", "minimum": 1, "maximum": 100},
                    "total": {"type": "integer"},
                    "totalPages": {"type": "integer"}
                }
            }
        },
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            "bearer": {"type": "http", "scheme": "bearer"}
        }
    })
}

fn schema_ref(name: &str) -> Value {
    match name {
        "" => json!({}),
        "Run[]" => json!({"type": "array", "items": {"$ref": "#/components/schemas/Run"}}),
        "Definition[]" => {
            json!({"type": "array", "items": {"$ref": "#/components/schemas/Definition"}})
        }
        "Hook[]" => json!({"type": "array", "items": {"$ref": "#/components/schemas/Hook"}}),
        "HookAccepted" => {
            json!({"type": "object", "properties": {"runId": {"type": "string"}, "status": {"type": "string"}}})
        }
        other => json!({"$ref": format!("#/components/schemas/{other}")}),
    }
}

fn param(name: &str, location: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "description": description, "schema": schema})
}

fn operation(d: &Doc) -> Value {
    let mut params = Vec::new();
    for seg in d.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(param(name, "path", "", json!({"type": "string"})));
        }
    }
    for (name, description, schema) in d.query {
        params.push(param(
            name,
            "query",
            description,
            serde_json::from_str(schema).unwrap_or(json!({"type": "string"})),
        ));
    }
    let mut responses = Map::new();
    for (code, description, schema) in d.responses {
        let content = if *schema == "html" {
            json!({"text/html": {"schema": {"type": "string"}}})
        } else if *code >= 400 {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
        } else if *schema == "AgentRun" {
            // Seed 003 answers without the success envelope.
            json!({"application/json": {"schema": schema_ref(schema)}})
        } else if *schema == "openapi" || *schema == "health" {
            json!({"application/json": {"schema": {"type": "object"}}})
        } else {
            let mut env = envelope(schema_ref(schema));
            if *schema == "Run[]" {
                env["required"] = json!(["success", "data", "meta"]);
                env["properties"]["meta"] = json!({"$ref": "#/components/schemas/Meta"});
            }
            json!({"application/json": {"schema": env}})
        };
        responses.insert(
            code.to_string(),
            json!({"description": description, "content": content}),
        );
    }
    // Answers every mutating route and every body can give, from the guard and extractors.
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    if matches!(d.method, "POST" | "PUT" | "PATCH" | "DELETE") {
        responses.insert(
            "403".into(),
            json!({"description": "Sent by a browser page from an origin that is not the server's own nor allowed with --allow-origin", "content": error}),
        );
    }
    if d.body.is_some_and(|b| b != "any") {
        responses.insert(
            "415".into(),
            json!({"description": "The body's Content-Type is missing or not one this route takes", "content": error}),
        );
    }
    let mut op = json!({
        "operationId": d.operation_id,
        "summary": d.summary,
        "tags": [d.tag],
        "parameters": params,
        "responses": responses,
    });
    if !d.auth {
        op["security"] = json!([]);
    }
    if let Some(body) = d.body {
        op["requestBody"] = match body {
            "yaml" => {
                let mut content = Map::new();
                for mt in super::extract::YAML_TYPES {
                    content.insert(mt.into(), json!({"schema": {"type": "string"}}));
                }
                content.insert(
                    "application/json".into(),
                    json!({"schema": {"type": "object"}}),
                );
                json!({"required": true, "content": content})
            }
            "json" | "any" => {
                json!({"required": false, "content": {"application/json": {"schema": {}}}})
            }
            name => {
                json!({"required": true, "content": {"application/json": {"schema": schema_ref(name)}}})
            }
        };
    }
    op
}

pub fn document(docs: &[Doc]) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for d in docs {
        let entry = paths.entry(d.path.to_string()).or_insert_with(|| json!({}));
        entry[d.method.to_ascii_lowercase()] = operation(d);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "stepwise",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A durable workflow engine: definitions, runs, hooks."
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}, {"bearer": []}],
        "paths": paths,
        "components": components(),
    })
}
