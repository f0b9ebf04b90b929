"""Integrations (seed 001, "Ingesting via integrations"): a connection to an outside system
(an MQTT subscription, a signed webhook, an HTTP feed to poll), the `ThingData` template
that maps each of its payloads to records, and the mapping of its external resource ids
to the org's things.

An integration is one catalog entity, `integration/{intg_…}`. Its secrets (an MQTT
password, a poll's request headers, a webhook's signing secret) are kept in the entity's
`secrets` field, which `public` strips: the API shows them in the creation answer only
(the webhook secret, which Sluice generates) and never after; a read key sees which
secrets are set, never their values. The services that use them (the edge verifying a
webhook, the integrations stage connecting) read them from their catalog view.
"""

from __future__ import annotations

import secrets as random_secrets
import ssl
from typing import Annotated, Literal, Union

import orjson
from pydantic import Field, StringConstraints, ValidationError, field_validator

from catalog.errors import Invalid, NotFound, not_found
from catalog.ids import derived_id, new_id
from catalog.models import EntityId, Expression, Name, Text, _Body
from catalog.store import Store, now_ms, ordered
from catalog.templates import TemplateCompileError, compile_expression

KIND = "integration"
STATUS_KIND = "integration_status"  # what the integrations stage last reported of one (catalog entity)
ROUTE = "integration"  # the raw envelope's route of an integration's message (processors.rulebooks)
KINDS = ("mqtt", "webhook", "http_poll")
THINGS_MAX = 5000  # mapped external ids per integration (the entity lives in every service's memory)
TOPICS_MAX = 100
HEADERS_MAX = 50
SECRET_MAX = 4096
WEBHOOK_SECRET_BYTES = 32
TOLERANCE_MAX_S = 3600  # a webhook's longest signature age limit

ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=SECRET_MAX)]
TopicFilter = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Url = Annotated[str, StringConstraints(max_length=2000)]


class Resource(_Body):
    """Where a payload's external resource id is: a JMESPath expression evaluated on the
    message (`{"topic", "topicLevels", "headers", "payload"}`) or on each record the template yields."""

    from_: Literal["message", "record"] = Field(alias="from")
    expression: Expression


class AutoRegister(_Body):
    """Registers a thing for an external id mapped to nothing, the first time one of its
    records is seen: in this place, of this type, named after the external id."""

    placeId: EntityId = Field(description="the org's site or fleet the new things are registered in")
    thingTypeId: EntityId = Field(description="their thing type (bound to its latest version when registered)")


def auto_thing_id(org_id: str, integration_id: str, external_id: str) -> str:
    """The id of the thing an integration registers for an external id: the same in every
    processor, so a thing is registered once however many decide it."""
    return derived_id("thing", org_id, integration_id, "external", external_id)


def auto_thing(org_id: str, integration: dict, external_id: str, type_version_id: str, created_at: int) -> dict:
    """The body of the thing an integration registers for `external_id` (no properties)."""
    auto = integration["autoRegister"]
    return {"id": auto_thing_id(org_id, integration["id"], external_id), "thingName": external_id,
            "thingType": None, "thingTypeId": auto["thingTypeId"], "thingDescription": None, "manufacturer": None,
            "model": None, "latitude": None, "longitude": None, "properties": {}, "placeId": auto["placeId"],
            "thingTypeVersionId": type_version_id, "integrationId": integration["id"], "externalId": external_id,
            "createdAt": created_at}


class MqttConfig(_Body):
    # ASCII classes only: a JSON Schema pattern is read with ECMAScript's `\s`, which is not Python's.
    url: Annotated[Url, StringConstraints(pattern=r"^mqtts?://[A-Za-z0-9._~%!$&'()*+,;=:@\[\]-]+/?$")]
    topics: list[TopicFilter] = Field(min_length=1, max_length=TOPICS_MAX)
    qos: Literal[0, 1] = 1
    protocol: Literal["3.1.1", "5"] = "5"
    clientId: Name | None = None
    username: Name | None = None
    password: Secret | None = None  # secret
    keepAliveSeconds: int = Field(60, ge=5, le=3600)
    caCertificate: str | None = Field(None, max_length=65536, pattern=r"-----BEGIN CERTIFICATE-----",
                                      description="with mqtts://, the PEM certificate(s) of the CA that signed the "
                                                  "broker's certificate (a private CA); default the system's CAs")

    @field_validator("caCertificate")
    @classmethod
    def _loads(cls, pem: str | None) -> str | None:
        # Refused here, with its reason, rather than by the stage when it connects.
        if pem is not None:
            if not pem.isascii():
                raise ValueError("not a PEM certificate TLS can use: PEM is ASCII text")
            try:
                ssl.create_default_context(cadata=pem)
            except (ssl.SSLError, ValueError, TypeError) as exc:
                raise ValueError(f"not a PEM certificate TLS can use: {exc}") from None
        return pem


class WebhookConfig(_Body):
    toleranceSeconds: int | None = Field(None, ge=1, le=TOLERANCE_MAX_S, description="the signature's age limit; "
                                         "default SLUICE_WEBHOOK_TOLERANCE_S")


class PollCursor(_Body):
    """Carries a value from each response into the next request (a feed version, a page token)."""

    in_: Literal["query", "body"] = Field(alias="in")
    name: Name  # the query parameter or the body field
    path: Expression  # JMESPath on the response: the next request's value
    initial: str | int | None = None


class HttpPollConfig(_Body):
    url: Annotated[Url, StringConstraints(pattern=r"^https?://[!-~]+$")]
    method: Literal["GET", "POST"] = "GET"
    headers: dict[Name, Secret] = Field({}, max_length=HEADERS_MAX)  # secret (authorization, say)
    body: dict | None = None  # POST: the JSON body, the cursor's field set into it
    intervalSeconds: float = Field(60, ge=1, le=86400)
    cursor: PollCursor | None = None


SECRET_FIELDS = {"mqtt": ("password",), "http_poll": ("headers",), "webhook": ()}
CONFIGS = {"mqtt": MqttConfig, "webhook": WebhookConfig, "http_poll": HttpPollConfig}


class _IntegrationIn(_Body):
    name: Name
    description: Text | None = None
    templateId: EntityId
    resource: Resource
    things: dict[ExternalId, EntityId] = Field({}, max_length=THINGS_MAX)
    autoRegister: AutoRegister | None = None


class MqttIntegrationIn(_IntegrationIn):
    kind: Literal["mqtt"]
    config: MqttConfig


class WebhookIntegrationIn(_IntegrationIn):
    kind: Literal["webhook"]
    config: WebhookConfig = WebhookConfig()


class HttpPollIntegrationIn(_IntegrationIn):
    kind: Literal["http_poll"]
    config: HttpPollConfig


IntegrationIn = Annotated[Union[MqttIntegrationIn, WebhookIntegrationIn, HttpPollIntegrationIn],
                          Field(discriminator="kind")]


class IntegrationPatch(_Body):
    """A partial update; absent fields stay. `config` replaces the whole config, except that a
    secret field it leaves out keeps its stored value; `things` replaces the whole mapping."""

    name: Name | None = None
    description: Text | None = None
    templateId: EntityId | None = None
    resource: Resource | None = None
    config: dict | None = None
    things: dict[ExternalId, EntityId] | None = Field(None, max_length=THINGS_MAX)
    autoRegister: AutoRegister | None = Field(None, description="null stops registering")


def message_body(topic: str | None, headers: dict[str, str], payload: bytes, payload_is_json: bool) -> bytes:
    """An integration's message as its raw envelope carries it: `{"topic", "headers", "payload"}`.
    A JSON payload is spliced in as it came (no second encoding); any other becomes a JSON string."""
    if not payload_is_json:
        payload = orjson.dumps(payload.decode("utf-8", errors="replace"))
    return orjson.dumps({"topic": topic, "headers": headers})[:-1] + b',"payload":' + payload + b"}"


def public(body: dict) -> dict:
    """The integration as the API shows it: without secret values, naming which are set."""
    shown = {k: v for k, v in body.items() if k != "secrets"}
    shown["secretsSet"] = sorted(name for name, value in body.get("secrets", {}).items() if value)
    return shown


def split_secrets(kind: str, config: dict) -> tuple[dict, dict]:
    """(config without its secret fields, the secret fields)."""
    names = SECRET_FIELDS[kind]
    return ({k: v for k, v in config.items() if k not in names},
            {k: v for k, v in config.items() if k in names and v})


class Integrations(Store):
    def _check_integration(self, org_id: str, template_id: str, resource: dict, things: dict[str, str],
                           auto: dict | None) -> None:
        if self.view.get("template", template_id, org_id) is None:
            raise NotFound(f"template {template_id!r} not found", field="templateId", code="TEMPLATE_NOT_FOUND")
        try:
            compile_expression("resource.expression", resource["expression"])
        except TemplateCompileError as exc:
            raise Invalid(str(exc), field=exc.field, code="INVALID_EXPRESSION", expression=exc.expression,
                          reason=exc.reason) from None
        for external_id, thing_id in things.items():
            self._check_thing(org_id, external_id, thing_id)
        if auto is not None:
            self._check_auto_register(org_id, auto)

    def _check_auto_register(self, org_id: str, auto: dict) -> None:
        place = self.view.get("place", auto["placeId"], org_id)
        if place is None or place.get("kind") not in ("site", "fleet"):  # a harbor's things are its ships
            raise NotFound(f"site or fleet {auto['placeId']!r} not found", field="autoRegister.placeId",
                           code="PLACE_NOT_FOUND")
        if self.view.get("thing_type", auto["thingTypeId"], org_id) is None:
            raise NotFound(f"thing type {auto['thingTypeId']!r} not found", field="autoRegister.thingTypeId",
                           code="THING_TYPE_NOT_FOUND")

    def _check_thing(self, org_id: str, external_id: str, thing_id: str) -> None:
        # An integration writes only to its org's things: another org's is as unknown as none.
        if self.view.get("thing", thing_id, org_id) is None:
            raise NotFound(f"things.{external_id}: thing {thing_id!r} not found", field=f"things.{external_id}",
                           code="THING_NOT_FOUND")

    def create_integration(self, org_id: str, spec: _IntegrationIn) -> dict:
        """The new integration, as the API shows it; a webhook's answer alone carries its `secret`."""
        given = spec.model_dump(mode="json", by_alias=True)
        self._check_integration(org_id, spec.templateId, given["resource"], spec.things, given["autoRegister"])
        config, secret_fields = split_secrets(spec.kind, given.pop("config"))
        if spec.kind == "webhook":
            secret_fields["secret"] = "whsec_" + random_secrets.token_hex(WEBHOOK_SECRET_BYTES)
        integration_id = new_id(KIND)
        now = now_ms()
        body = {"id": integration_id, **given, "config": config, "paused": False, "createdAt": now,
                "updatedAt": now, "secrets": secret_fields}
        self.writer.put(KIND, integration_id, org_id, body)
        shown = public(body)
        if "secret" in secret_fields:
            shown["secret"] = secret_fields["secret"]
        return shown

    def integration(self, org_id: str, integration_id: str) -> dict:
        """The org's integration, secrets included (for the services; the API shows `public` of it)."""
        return self._get(KIND, integration_id, org_id)

    def integrations(self, org_id: str) -> list[dict]:
        return [public(body) for body in ordered(self.view.list(KIND, org_id))]

    def update_integration(self, org_id: str, integration_id: str, patch: IntegrationPatch) -> dict:
        current = self.integration(org_id, integration_id)
        given = patch.model_dump(mode="json", by_alias=True, exclude_unset=True)
        body = {**current, **{k: v for k, v in given.items() if k != "config"}}
        if "config" in given:
            model = CONFIGS[current["kind"]]
            try:
                config = model.model_validate(given["config"]).model_dump(mode="json", by_alias=True)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(["config", *(str(p) for p in first["loc"])])
                raise Invalid(f"{field}: {first['msg']}", field=field) from None
            body["config"], fresh = split_secrets(current["kind"], config)
            kept = {k: v for k, v in current["secrets"].items() if k not in fresh}
            body["secrets"] = {**kept, **fresh}
        self._check_integration(org_id, body["templateId"], body["resource"], given.get("things", {}),
                                given.get("autoRegister"))
        return public(self._put_integration(org_id, body))

    def set_paused(self, org_id: str, integration_id: str, paused: bool) -> dict:
        return public(self._put_integration(org_id, {**self.integration(org_id, integration_id), "paused": paused}))

    def map_thing(self, org_id: str, integration_id: str, external_id: str, thing_id: str) -> dict:
        self.map_things(org_id, integration_id, {external_id: thing_id}, replace=False)
        return {"externalId": external_id, "thingId": thing_id}

    def map_things(self, org_id: str, integration_id: str, changes: dict[str, str | None], replace: bool) -> dict:
        """The new mapping: `changes` as it is (`replace`), or merged into the current one (a None
        unmaps its external id). Every thing is checked before anything changes."""
        current = self.integration(org_id, integration_id)
        for external_id, thing_id in changes.items():
            if thing_id is not None:
                self._check_thing(org_id, external_id, thing_id)
        things = {} if replace else dict(current["things"])
        for external_id, thing_id in changes.items():
            if thing_id is None:
                things.pop(external_id, None)
            else:
                things[external_id] = thing_id
        if len(things) > THINGS_MAX:
            raise Invalid(f"an integration maps at most {THINGS_MAX} external ids", field="things",
                          code="TOO_MANY_THINGS")
        return self._put_integration(org_id, {**current, "things": things})["things"]

    def unmap_thing(self, org_id: str, integration_id: str, external_id: str) -> None:
        current = self.integration(org_id, integration_id)
        if external_id not in current["things"]:
            raise not_found("mapping of external id", external_id)
        things = {k: v for k, v in current["things"].items() if k != external_id}
        self._put_integration(org_id, {**current, "things": things})

    def delete_integration(self, org_id: str, integration_id: str) -> None:
        current = self.integration(org_id, integration_id)
        # Soft: every view forgets it (the stage stops running it); secrets are not kept on the topic.
        self.writer.put(KIND, integration_id, org_id, {**public(current), "deleted": True, "deletedAt": now_ms()})
        if self.view.get(STATUS_KIND, integration_id, org_id) is not None:
            self.writer.put(STATUS_KIND, integration_id, org_id, {"id": integration_id, "deleted": True})

    def _put_integration(self, org_id: str, body: dict) -> dict:
        return self.writer.put(KIND, body["id"], org_id, {**body, "updatedAt": now_ms()})
