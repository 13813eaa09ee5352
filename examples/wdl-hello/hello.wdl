version 1.0

# A greeting for every name in a file: a scattered call of an imported task.
import "tasks/greet.wdl" as tasks

workflow hello {
  input {
    File names
    String greeting = "Hello"
  }
  scatter (name in read_lines(names)) {
    call tasks.greet { input: name = name, greeting = greeting }
  }
  output {
    Array[File] greetings = greet.out
  }
}
