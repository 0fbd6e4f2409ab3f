"""The {{ cookiecutter.package_name }} service: see app.py for how it is put together."""
