SELECT depends_on FROM {s}.task_deps WHERE task_id = $1 ORDER BY depends_on;
