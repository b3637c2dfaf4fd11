"""The edge stays thin (STYLE.md, house rules): routers get what the app factory built through
typed dependencies, never from `app.state`."""

import ast
from pathlib import Path

ROUTERS = Path(__file__).resolve().parent.parent / "app" / "routers"


def _reads_app_state(node: ast.AST) -> bool:
    """`app.state`, `request.app.state`, `getattr(app, "state")`..."""
    def is_app(value: ast.AST) -> bool:
        return (isinstance(value, ast.Name) and value.id == "app") or \
            (isinstance(value, ast.Attribute) and value.attr == "app")

    if isinstance(node, ast.Attribute) and node.attr == "state":
        return is_app(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2:
        name = node.args[1]
        return is_app(node.args[0]) and isinstance(name, ast.Constant) and name.value == "state"
    return False


def test_no_router_reads_app_state():
    modules = sorted(ROUTERS.glob("*.py"))
    assert len(modules) > 10
    found = [f"{path.name}:{node.lineno}" for path in modules
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if _reads_app_state(node)]
    assert found == [], "routers take SettingsDep, NoteCipherDep... (app/deps.py): " + \
        ", ".join(found)


def test_the_check_sees_each_way_of_reading_app_state():
    for source in ("request.app.state.settings", "app.state.keyring", "x = request.app.state",
                   "getattr(request.app, 'state')"):
        assert any(_reads_app_state(n) for n in ast.walk(ast.parse(source))), source
    for source in ("request.state.db", "settings.state", "app.routes"):
        assert not any(_reads_app_state(n) for n in ast.walk(ast.parse(source))), source
