//! A small model of an OpenAPI 3.1 document whose schemas come from schemars: parameters,
//! request bodies, responses, operations and path items, and how they render as JSON. It knows
//! nothing of this service's routes: `http` describes each route with these types where it
//! registers the route, and renders the whole document from the same list
//! (docs/protocol.md, "REST surface").

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// Produces a schema, registering the definitions it refers to with the generator.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Value;

/// The schema of `T`: a `$ref` to `#/components/schemas/…` for named types.
pub fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// A generator for draft 2020-12 schemas whose definitions go under `components/schemas`.
pub fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// A path or query parameter.
#[derive(Debug, Clone)]
pub struct Param {
    name: &'static str,
    location: &'static str,
    description: &'static str,
    schema: Value,
}

impl Param {
    /// A path parameter (always required).
    pub fn path(name: &'static str, description: &'static str, schema: Value) -> Self {
        Self {
            name,
            location: "path",
            description,
            schema,
        }
    }

    /// An optional query parameter.
    pub fn query(name: &'static str, description: &'static str, schema: Value) -> Self {
        Self {
            name,
            location: "query",
            description,
            schema,
        }
    }

    /// The parameter's name, as it appears in the path template or the query.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn render(&self) -> Value {
        json!({"name": self.name, "in": self.location, "required": self.location == "path",
               "description": self.description, "schema": self.schema})
    }
}

/// A response: a description, a schema per media type, and headers.
#[derive(Debug, Clone)]
pub struct Response {
    description: &'static str,
    content: Vec<(&'static str, SchemaFn)>,
    headers: Vec<(&'static str, &'static str, Value)>,
}

impl Response {
    /// A response without a body.
    pub fn new(description: &'static str) -> Self {
        Self {
            description,
            content: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// With a body of `media_type` shaped by `schema`.
    pub fn content(mut self, media_type: &'static str, schema: SchemaFn) -> Self {
        self.content.push((media_type, schema));
        self
    }

    /// With a JSON body shaped by `schema`.
    pub fn json(self, schema: SchemaFn) -> Self {
        self.content("application/json", schema)
    }

    /// With a header.
    pub fn header(mut self, name: &'static str, description: &'static str, schema: Value) -> Self {
        self.headers.push((name, description, schema));
        self
    }

    fn render(&self, generator: &mut SchemaGenerator) -> Value {
        let mut response = Map::new();
        response.insert("description".into(), self.description.into());
        if !self.content.is_empty() {
            let mut content = Map::new();
            for (media_type, schema) in &self.content {
                content.insert((*media_type).into(), json!({"schema": schema(generator)}));
            }
            response.insert("content".into(), Value::Object(content));
        }
        if !self.headers.is_empty() {
            let headers: Map<String, Value> = self
                .headers
                .iter()
                .map(|(name, description, schema)| {
                    let header = json!({"description": description, "schema": schema});
                    ((*name).to_owned(), header)
                })
                .collect();
            response.insert("headers".into(), Value::Object(headers));
        }
        Value::Object(response)
    }
}

/// One operation: what a method on a path does, takes and answers. Errors share one body
/// schema, given when the document is rendered.
#[derive(Debug, Clone)]
pub struct Operation {
    id: &'static str,
    summary: &'static str,
    open: bool,
    params: Vec<Param>,
    body: Option<SchemaFn>,
    errors: Vec<(u16, &'static str)>,
    responses: Vec<(u16, Response)>,
}

impl Operation {
    /// An operation with its `operationId` and summary.
    pub fn new(id: &'static str, summary: &'static str) -> Self {
        Self {
            id,
            summary,
            open: false,
            params: Vec::new(),
            body: None,
            errors: Vec::new(),
            responses: Vec::new(),
        }
    }

    /// The `operationId`.
    pub fn id(&self) -> &'static str {
        self.id
    }

    /// Needs no credentials, whatever the document's default security says.
    pub fn open(mut self) -> Self {
        self.open = true;
        self
    }

    /// With query parameters.
    pub fn params(mut self, params: impl IntoIterator<Item = Param>) -> Self {
        self.params.extend(params);
        self
    }

    /// With a required JSON request body shaped by `schema`.
    pub fn body(mut self, schema: SchemaFn) -> Self {
        self.body = Some(schema);
        self
    }

    /// With an answer that is not an error.
    pub fn response(mut self, status: u16, response: Response) -> Self {
        self.responses.push((status, response));
        self
    }

    /// With error answers, each with the error body.
    pub fn errors(mut self, errors: &[(u16, &'static str)]) -> Self {
        self.errors.extend_from_slice(errors);
        self
    }

    /// With one more error answer.
    pub fn error(self, status: u16, description: &'static str) -> Self {
        self.errors(&[(status, description)])
    }

    /// The status codes it answers, errors first.
    pub fn statuses(&self) -> impl Iterator<Item = u16> + '_ {
        let errors = self.errors.iter().map(|(status, _)| *status);
        errors.chain(self.responses.iter().map(|(status, _)| *status))
    }

    fn render(&self, generator: &mut SchemaGenerator, error: SchemaFn) -> Value {
        let mut operation = Map::new();
        operation.insert("operationId".into(), self.id.into());
        operation.insert("summary".into(), self.summary.into());
        if self.open {
            operation.insert("security".into(), json!([]));
        }
        if !self.params.is_empty() {
            let params = self.params.iter().map(Param::render).collect();
            operation.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = self.body {
            let content = json!({"application/json": {"schema": body(generator)}});
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": content}),
            );
        }
        let mut responses = Map::new();
        for (status, description) in &self.errors {
            let response = Response::new(description).json(error);
            responses.insert(status.to_string(), response.render(generator));
        }
        for (status, response) in &self.responses {
            responses.insert(status.to_string(), response.render(generator));
        }
        operation.insert("responses".into(), Value::Object(responses));
        Value::Object(operation)
    }
}

/// A path template with its parameters and its operations by method.
#[derive(Debug, Clone, Default)]
pub struct PathItem {
    params: Vec<Param>,
    operations: Vec<(&'static str, Operation)>,
}

impl PathItem {
    /// With a path parameter shared by every operation.
    pub fn param(&mut self, param: Param) {
        self.params.push(param);
    }

    /// With `operation` under `method` (lowercase, as the document spells it).
    pub fn operation(&mut self, method: &'static str, operation: Operation) {
        self.operations.push((method, operation));
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn operations(&self) -> &[(&'static str, Operation)] {
        &self.operations
    }

    /// The item as JSON; `error` is the schema of every error body.
    pub fn render(&self, generator: &mut SchemaGenerator, error: SchemaFn) -> Value {
        let mut item = Map::new();
        if !self.params.is_empty() {
            let params = self.params.iter().map(Param::render).collect();
            item.insert("parameters".into(), Value::Array(params));
        }
        for (method, operation) in &self.operations {
            item.insert((*method).into(), operation.render(generator, error));
        }
        Value::Object(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(_: &mut SchemaGenerator) -> Value {
        json!({"type": "string"})
    }

    #[test]
    fn an_operation_renders_errors_before_answers_and_security_when_open() {
        let operation = Operation::new("getThing", "a thing")
            .error(404, "no such thing")
            .response(200, Response::new("the thing").json(text))
            .open();
        let mut generator = generator();
        let value = operation.render(&mut generator, schema_of::<String>);
        assert_eq!(value["operationId"], "getThing");
        assert_eq!(value["security"], json!([]));
        let statuses: Vec<&String> = value["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .collect();
        assert_eq!(statuses, ["404", "200"]);
        assert_eq!(
            value["responses"]["404"]["content"]["application/json"]["schema"],
            json!({"type": "string"})
        );
        assert_eq!(operation.statuses().collect::<Vec<_>>(), [404, 200]);
    }

    #[test]
    fn a_path_item_renders_shared_parameters_and_each_method() {
        let mut item = PathItem::default();
        item.param(Param::path("id", "the id", json!({"type": "string"})));
        item.operation(
            "delete",
            Operation::new("deleteThing", "delete").response(204, Response::new("deleted")),
        );
        let value = item.render(&mut generator(), text);
        assert_eq!(value["parameters"][0]["in"], "path");
        assert_eq!(value["parameters"][0]["required"], true);
        assert_eq!(
            value["delete"]["responses"]["204"],
            json!({"description": "deleted"})
        );
        assert!(value["delete"].get("requestBody").is_none());
    }

    #[test]
    fn named_types_become_references_to_components() {
        #[derive(JsonSchema)]
        #[allow(dead_code)]
        struct Thing {
            name: String,
        }
        let mut generator = generator();
        let body = Operation::new("putThing", "put")
            .body(schema_of::<Thing>)
            .render(&mut generator, text);
        assert_eq!(
            body["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Thing"
        );
        assert!(generator.take_definitions(true).contains_key("Thing"));
    }
}
