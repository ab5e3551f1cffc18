"""Every container and function is wired to its settings class and to code that exists.

For each ECS container, container-image Lambda and pipe container override in every stack:
each variable it is given is a field of that process's settings class (or a standard AWS
variable), the settings class accepts the set as complete, and the command or handler it
runs exists in the code copied into its image.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from flows.settings import ApiSettings, MigrateSettings, SchedulerSettings, WorkerSettings
from tests.infra.conftest import REPO_ROOT, Synthesized

LAMBDA_ENTRYPOINT = ["python", "-m", "awslambdaric"]

# The process each command or handler starts, and the settings class that process reads.
SETTINGS_BY_COMMAND: dict[tuple[str, ...], type[BaseSettings]] = {
    ("python", "-m", "api"): ApiSettings,
    ("python", "-m", "worker"): WorkerSettings,
    ("python", "-m", "flows.migrate"): MigrateSettings,
}
SETTINGS_BY_HANDLER_MODULE: dict[str, type[BaseSettings]] = {
    "api.lambda_handler": ApiSettings,
    "worker.scheduler": SchedulerSettings,
    "flows.migrate": MigrateSettings,
}


@dataclass
class Process:
    """One container or function as the template starts it."""

    where: str  # "<stack>/<logical id>[/<container>]"
    dockerfile: str
    command: tuple[str, ...] | None = None  # `python -m ...`
    handler: str | None = None  # Lambda handler
    variables: dict[str, Any] = field(default_factory=dict)  # name -> value (or a token)


def _dockerfile_for(image: Any, images: dict[str, Any], where: str) -> str:
    text = json.dumps(image)
    found = [source for digest, source in images.items() if digest in text]
    assert len(found) == 1, f"{where}: image is not one of the app's image assets: {text}"
    return found[0]


def _image_command(dockerfile: str) -> tuple[str, ...]:
    """The CMD of a Dockerfile (exec form)."""
    lines = (REPO_ROOT / dockerfile).read_text().splitlines()
    cmd = [line for line in lines if line.startswith("CMD ")][-1]
    return tuple(json.loads(cmd.removeprefix("CMD ")))


def _image_packages(dockerfile: str) -> set[str]:
    """The top-level Python packages a Dockerfile copies into /app."""
    text = (REPO_ROOT / dockerfile).read_text()
    return set(re.findall(r"^COPY (\w+)/ \1/$", text, flags=re.MULTILINE))


def processes(app: Synthesized) -> Iterator[Process]:
    """Every container, image function and pipe override of every stack in the app."""
    for stack in app.stack_names():
        template = app.template(stack)
        images = {
            digest: asset["source"]["dockerFile"]
            for digest, asset in app.assets(stack).get("dockerImages", {}).items()
        }
        task_containers: dict[str, Process] = {}
        for key, resource in template["Resources"].items():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::ECS::TaskDefinition":
                for container in props["ContainerDefinitions"]:
                    where = f"{stack}/{key}/{container['Name']}"
                    dockerfile = _dockerfile_for(container["Image"], images, where)
                    variables = {e["Name"]: e["Value"] for e in container.get("Environment", ())}
                    secrets = container.get("Secrets", ())
                    variables.update({s["Name"]: s["ValueFrom"] for s in secrets})
                    process = Process(
                        where,
                        dockerfile,
                        command=tuple(container.get("Command") or _image_command(dockerfile)),
                        variables=variables,
                    )
                    task_containers[f"{key}/{container['Name']}"] = process
                    yield process
            elif resource["Type"] == "AWS::Lambda::Function" and props.get("PackageType"):
                where = f"{stack}/{key}"
                config = props.get("ImageConfig", {})
                assert config.get("EntryPoint") == LAMBDA_ENTRYPOINT, where
                yield Process(
                    where,
                    _dockerfile_for(props["Code"]["ImageUri"], images, where),
                    handler=config["Command"][0],
                    variables=dict(props.get("Environment", {}).get("Variables", {})),
                )
        yield from _pipe_overrides(stack, template, task_containers)


def _pipe_overrides(
    stack: str, template: dict[str, Any], containers: dict[str, Process]
) -> Iterator[Process]:
    """A pipe's container overrides add variables to the task definition's container."""
    for key, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Pipes::Pipe":
            continue
        ecs = resource["Properties"]["TargetParameters"]["EcsTaskParameters"]
        task = ecs["TaskDefinitionArn"]["Ref"]
        for override in ecs.get("Overrides", {}).get("ContainerOverrides", []):
            base = containers[f"{task}/{override['Name']}"]
            extra = {e["Name"]: e["Value"] for e in override.get("Environment", [])}
            yield Process(
                f"{stack}/{key} -> {base.where}",
                base.dockerfile,
                command=base.command,
                variables={**base.variables, **extra},
            )


def _settings_for(process: Process) -> type[BaseSettings]:
    if process.handler is not None:
        module = process.handler.rsplit(".", 1)[0]
        assert module in SETTINGS_BY_HANDLER_MODULE, (
            f"{process.where}: unknown handler {process.handler}"
        )
        return SETTINGS_BY_HANDLER_MODULE[module]
    assert process.command in SETTINGS_BY_COMMAND, (
        f"{process.where}: unknown command {process.command}"
    )
    return SETTINGS_BY_COMMAND[process.command]


def _placeholder(settings: type[BaseSettings], name: str, value: Any) -> Any:
    """The literal value, or a valid stand-in for a value CloudFormation fills in."""
    if isinstance(value, str):
        return value
    annotation = str(settings.model_fields[name].annotation)
    if "int" in annotation:
        return "5432" if name == "db_port" else "1"
    return f"resolved-{name}"


def _isolated(settings: type[BaseSettings]) -> type[BaseSettings]:
    """`settings` reading only its arguments, never this process's environment."""

    def sources(cls, settings_cls, init_settings, **others):
        return (init_settings,)

    return type(f"Isolated{settings.__name__}", (settings,), {
        "settings_customise_sources": classmethod(sources)
    })


@pytest.fixture(scope="module")
def all_processes(synthesized_app: Synthesized, variant_app: Synthesized) -> list[Process]:
    found = list(processes(synthesized_app)) + list(processes(variant_app))
    assert found, "no containers or functions found"
    return found


def test_every_service_of_both_stacks_is_checked(all_processes: list[Process]) -> None:
    kinds = {
        (process.where.split("/")[0], process.handler or " ".join(process.command or ()))
        for process in all_processes
    }

    assert {
        ("StandardStack", "python -m api"),
        ("StandardStack", "python -m worker"),
        ("StandardStack", "worker.scheduler.handler"),
        ("StandardStack", "flows.migrate.handler"),
    } <= kinds
    assert any(stack == "UltraStack" for stack, _ in kinds)


def unknown_variables(found: list[Process]) -> list[str]:
    """Variables given to a process that its settings class does not read."""
    unknown = []
    for process in found:
        settings = _settings_for(process)
        for name in process.variables:
            if name.startswith("AWS_"):
                continue  # read by boto3, not by the settings
            if name.lower() not in settings.model_fields:
                unknown.append(f"{process.where}: {name} is not read by {settings.__name__}")
    return unknown


def configuration_problems(found: list[Process]) -> list[str]:
    """What each settings class rejects in the variables its process is given."""
    problems = []
    for process in found:
        settings = _settings_for(process)
        values = {
            name.lower(): _placeholder(settings, name.lower(), value)
            for name, value in process.variables.items()
            if name.lower() in settings.model_fields
        }
        try:
            _isolated(settings)(**values)
        except ValidationError as exc:
            errors = "; ".join(
                f"{'_'.join(map(str, error['loc'])).upper()}: {error['msg']}"
                for error in exc.errors()
            )
            problems.append(f"{process.where} ({settings.__name__}): {errors}")
    return problems


def code_problems(found: list[Process]) -> list[str]:
    """Commands and handlers that are missing from the code or from the image."""
    problems = []
    for process in found:
        if process.handler:
            module = process.handler.rsplit(".", 1)[0]
        else:
            module = (process.command or ("",))[-1]
        if module.split(".")[0] not in _image_packages(process.dockerfile):
            problems.append(f"{process.where}: {module} is not copied into {process.dockerfile}")
            continue
        if process.handler:
            problem = _handler_problem(process.handler)
        else:
            problem = _main_module_problem(module)
        if problem:
            problems.append(f"{process.where}: {problem}")
    return problems


def test_every_variable_is_a_setting_of_its_process(all_processes: list[Process]) -> None:
    assert unknown_variables(all_processes) == []


def test_every_process_gets_a_complete_valid_configuration(
    all_processes: list[Process],
) -> None:
    assert configuration_problems(all_processes) == []


def test_commands_and_handlers_exist_in_the_image(all_processes: list[Process]) -> None:
    assert code_problems(all_processes) == []


def test_the_checks_name_the_resource_and_the_variable() -> None:
    # The same checks on deliberately miswired processes must report each mistake.
    wrong = [
        Process(
            "Stack/Api/Api",
            "api/Dockerfile",
            command=("python", "-m", "api"),
            variables={"QUEUE_URL": {"Ref": "Queue"}, "DB_HOST": "h", "QUEUE_NAME": "q"},
        ),
        Process(
            "Stack/Scheduler",
            "api/Dockerfile",
            handler="worker.scheduler.handler",
            variables={"QUEUE_URL": "q", "DATABASE_SECRET_ARN": "arn"},
        ),
        Process(
            "Stack/Migrations",
            "worker/Dockerfile",
            handler="flows.migrate.no_such_handler",
            variables={"DATABASE_SECRET_ARN": "arn", "AWS_REGION": "eu-west-1"},
        ),
    ]

    assert unknown_variables(wrong) == ["Stack/Api/Api: QUEUE_NAME is not read by ApiSettings"]
    config = configuration_problems(wrong)
    assert len(config) == 1
    assert config[0].startswith("Stack/Api/Api (ApiSettings): DATABASE_SECRET_ARN: ")
    assert "API_KEYS_SECRET_ARN" in config[0]
    assert code_problems(wrong) == [
        "Stack/Scheduler: worker.scheduler is not copied into api/Dockerfile",
        "Stack/Migrations: flows.migrate defines no top-level no_such_handler",
    ]


def _module_file(module: str) -> Path | None:
    relative = Path(*module.split("."))
    for candidate in (REPO_ROOT / f"{relative}.py", REPO_ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _main_module_problem(module: str) -> str | None:
    """`python -m module` needs module/__main__.py (a package) or module.py."""
    package_main = REPO_ROOT / Path(*module.split(".")) / "__main__.py"
    if package_main.is_file() or (REPO_ROOT / f"{Path(*module.split('.'))}.py").is_file():
        return None
    return f"`python -m {module}` has no {module.replace('.', '/')}/__main__.py"


def _handler_problem(handler: str) -> str | None:
    """The handler module must define the function at top level."""
    module, function = handler.rsplit(".", 1)
    path = _module_file(module)
    if path is None or importlib.util.find_spec(module.split(".")[0]) is None:
        return f"handler module {module} does not exist"
    tree = ast.parse(path.read_text())
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    } | {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    if function not in defined:
        return f"{module} defines no top-level {function}"
    return None
