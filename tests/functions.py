"""The app's functions by name, indexed once: a second get_functions() call fails."""

from __future__ import annotations

from azure.functions.decorators.function_app import Function

import function_app

FUNCTIONS: dict[str, Function] = {
    str(f.get_function_name()): f for f in function_app.app.get_functions()
}
