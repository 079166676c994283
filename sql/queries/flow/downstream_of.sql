SELECT task_id FROM {s}.task_deps WHERE depends_on = $1 ORDER BY task_id;
