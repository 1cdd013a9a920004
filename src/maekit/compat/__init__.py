"""Other frameworks' run files mapped onto maekit's task configs (MindFormers run YAML)."""
