"""The Azure Functions app: registration only (see triggers/ for the functions)."""

import azure.functions as func

from triggers import http, janitor, operator, poison, purge, queues

app = func.FunctionApp()
app.register_functions(http.bp)
app.register_functions(operator.bp)
app.register_functions(purge.bp)
app.register_functions(queues.bp)
app.register_functions(poison.bp)
app.register_functions(janitor.bp)
