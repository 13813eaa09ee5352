#!/usr/bin/env cwl-runner
# The smallest useful tool: writes a greeting to a file.
cwlVersion: v1.2
class: CommandLineTool
baseCommand: echo
inputs:
  message:
    type: string
    inputBinding: {position: 1}
outputs:
  greeting:
    type: stdout
stdout: greeting.txt
